"""What a server uses: CPU and RSS from /proc and from Prometheus text."""

from __future__ import annotations

import os
import time

from skewless.serving import resources


def test_process_metrics_parse():
    text = ("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.5\n"
            "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 1048576\n")
    assert resources.parse_process_metrics(text) == (12.5, 1048576.0)
    assert resources.parse_process_metrics("") == (None, None)


def test_proc_monitor_sees_a_busy_process():
    monitor = resources.ProcMonitor(os.getpid())
    wall = time.monotonic()
    monitor.start()
    end = time.process_time() + 0.5
    while time.process_time() < end:
        pass
    usage = monitor.stop()
    cpu_seconds = usage.cpu_cores * (time.monotonic() - wall)
    assert 0.4 < cpu_seconds < 0.8 and usage.rss_mb > 10
