"""What a server uses while it is under load: CPU and RSS, GPU utilisation and memory.

A local server is read from ``/proc/<pid>``; a remote one from its Prometheus endpoint
(``process_cpu_seconds_total`` and ``process_resident_memory_bytes``, which Prometheus clients
export for their process); GPUs through NVML when ``pynvml`` is installed and a GPU answers.
Each monitor is started before a step and stopped after it, and returns averages over the step.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Protocol

SAMPLE_SECONDS = 0.2


@dataclass(frozen=True)
class Usage:
    """Averages over one step; None where nothing could be measured."""

    cpu_cores: float | None = None  # CPU seconds per wall second
    rss_mb: float | None = None  # peak
    gpu_utilization: float | None = None  # percent, mean over samples and GPUs
    gpu_memory_mb: float | None = None  # peak, summed over GPUs

    def merged(self, other: Usage) -> Usage:
        """This usage with the gaps filled from ``other``."""
        return Usage(*(a if a is not None else b for a, b in zip(
            (self.cpu_cores, self.rss_mb, self.gpu_utilization, self.gpu_memory_mb),
            (other.cpu_cores, other.rss_mb, other.gpu_utilization, other.gpu_memory_mb),
            strict=True)))


class Monitor(Protocol):
    def start(self) -> None: ...

    def stop(self) -> Usage: ...


class _Sampler:
    """Calls ``sample`` every SAMPLE_SECONDS on a thread between start and stop."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._stop.clear()
        self.sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()

    def _halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


def _proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        # The command name (field 2) may hold spaces; the fields after it are fixed.
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def check_pid(pid: int) -> None:
    """Raises ValueError naming the pid when /proc cannot be read for it."""
    try:
        _proc_cpu_seconds(pid)
    except (OSError, IndexError, ValueError):
        raise ValueError(f"--pid {pid}: no such local process (/proc/{pid}/stat)") from None


class ProcMonitor(_Sampler):
    """CPU and peak RSS of a local process (and not its children) from /proc."""

    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid = pid

    def start(self) -> None:
        self._cpu, self._wall, self._rss = _proc_cpu_seconds(self.pid), time.monotonic(), 0.0
        super().start()

    def sample(self) -> None:
        try:
            self._rss = max(self._rss, _proc_rss_mb(self.pid))
        except OSError:
            pass

    def stop(self) -> Usage:
        self._halt()
        try:
            cpu = (_proc_cpu_seconds(self.pid) - self._cpu) / (time.monotonic() - self._wall)
        except OSError:
            return Usage()
        return Usage(cpu_cores=cpu, rss_mb=self._rss or None)


def parse_process_metrics(text: str) -> tuple[float | None, float | None]:
    """``process_cpu_seconds_total`` and ``process_resident_memory_bytes`` (summed over series)."""
    from prometheus_client.parser import text_string_to_metric_families

    cpu = rss = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "process_cpu_seconds_total":
                cpu = (cpu or 0.0) + sample.value
            elif sample.name == "process_resident_memory_bytes":
                rss = (rss or 0.0) + sample.value
    return cpu, rss


class PrometheusMonitor(_Sampler):
    """CPU and peak RSS of a remote server from its Prometheus metrics URL."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        super().__init__()
        self.url, self.timeout = url, timeout

    def scrape(self) -> tuple[float | None, float | None]:
        """Raises OSError or ValueError when the URL does not answer Prometheus text."""
        with urllib.request.urlopen(self.url, timeout=self.timeout) as response:  # noqa: S310
            return parse_process_metrics(response.read().decode("utf-8", "replace"))

    def start(self) -> None:
        self._rss = 0.0
        self._cpu, _ = self._safe_scrape()
        self._wall = time.monotonic()
        super().start()

    def _safe_scrape(self) -> tuple[float | None, float | None]:
        try:
            return self.scrape()
        except (OSError, ValueError):
            return None, None

    def sample(self) -> None:
        _, rss = self._safe_scrape()
        if rss is not None:
            self._rss = max(self._rss, rss / 2**20)

    def stop(self) -> Usage:
        self._halt()
        cpu, _ = self._safe_scrape()
        cores = None
        if cpu is not None and self._cpu is not None:
            cores = (cpu - self._cpu) / (time.monotonic() - self._wall)
        return Usage(cpu_cores=cores, rss_mb=self._rss or None)


class NvmlMonitor(_Sampler):
    """GPU utilisation and memory of every visible GPU, through NVML."""

    def __init__(self, nvml) -> None:
        super().__init__()
        self._nvml = nvml
        self._handles = [nvml.nvmlDeviceGetHandleByIndex(i)
                         for i in range(nvml.nvmlDeviceGetCount())]

    def start(self) -> None:
        self._utilization: list[float] = []
        self._memory = 0.0
        super().start()

    def sample(self) -> None:
        nvml = self._nvml
        try:
            rates = [nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self._handles]
            used = sum(nvml.nvmlDeviceGetMemoryInfo(h).used for h in self._handles)
        except nvml.NVMLError:
            return
        self._utilization.append(sum(rates) / len(rates))
        self._memory = max(self._memory, used / 2**20)

    def stop(self) -> Usage:
        self._halt()
        if not self._utilization:
            return Usage()
        return Usage(gpu_utilization=sum(self._utilization) / len(self._utilization),
                     gpu_memory_mb=self._memory)


def gpu_monitor() -> NvmlMonitor | None:
    """An NVML monitor, or None without pynvml, a driver or a GPU."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() == 0:
            return None
        return NvmlMonitor(pynvml)
    except pynvml.NVMLError:
        return None


class Monitors:
    """Several monitors started and stopped together; their usages merged."""

    def __init__(self, monitors: list[Monitor]) -> None:
        self.monitors = monitors

    def start(self) -> None:
        for monitor in self.monitors:
            monitor.start()

    def stop(self) -> Usage:
        usage = Usage()
        for monitor in self.monitors:
            usage = usage.merged(monitor.stop())
        return usage
