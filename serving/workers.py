"""``skewless serve --workers N``: N server processes on the same ports.

The front end is Python on one event loop, so one process tops out at one core. Here a
supervisor starts N ``skewless serve`` processes that bind the same gRPC and REST ports with
SO_REUSEPORT; the kernel spreads incoming connections over them. Each process keeps its own
model manager (so each picks up new versions from the base path on its own), its own batcher
and its own threads. Metrics go to files in one ``PROMETHEUS_MULTIPROC_DIR``, so whichever
process answers a scrape reports the totals.

A HandleReloadConfigRequest would reach one process only, so the workers refuse it: a config
change goes through ``--model_config_file``, which every worker re-reads.

The supervisor forwards SIGINT/SIGTERM to the workers, and stops them all when one exits.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from skewless.serving.metrics import MULTIPROC_DIR_ENV

logger = logging.getLogger("skewless.serving")

_WORKER_COMMAND = "from skewless.cli import main; main()"


def worker_argv(flags: Mapping[str, Any]) -> list[str]:
    """The ``skewless serve`` arguments of one worker: the same flags, one process, SO_REUSEPORT."""
    argv = ["serve"]
    for name, value in flags.items():
        if name in ("workers", "reuse_port", "worker_processes"):
            continue
        argv.append(f"--{name}={value}")
    return argv + ["--workers=1", "--reuse_port=true", f"--worker_processes={flags['workers']}"]


def prepare_multiproc_dir(environ: Mapping[str, str]) -> tuple[str, bool]:
    """The metrics folder of the workers, emptied of a previous run's files.

    Returns:
        The folder (``PROMETHEUS_MULTIPROC_DIR`` when set, else a new temporary folder) and
        whether it is temporary (removed when the workers stop).
    """
    given = environ.get(MULTIPROC_DIR_ENV, "")
    if not given:
        return tempfile.mkdtemp(prefix="skewless-metrics-"), True
    os.makedirs(given, exist_ok=True)
    for stale in glob.glob(os.path.join(given, "*.db")):
        os.remove(stale)  # a previous run's counts would add to this run's totals
    return given, False


def run_workers(flags: Mapping[str, Any], workers: int) -> int:
    """Runs ``workers`` server processes until a signal or until one of them exits.

    Args:
        flags: The ``serve`` flags (already checked by the caller).
        workers: How many processes.

    Returns:
        The exit status: 0 after a signal, else the status of the worker that exited first.
    """
    metrics_dir, temporary = prepare_multiproc_dir(os.environ)
    env = {**os.environ, MULTIPROC_DIR_ENV: metrics_dir}
    argv = [sys.executable, "-c", _WORKER_COMMAND, *worker_argv(flags)]
    children = [subprocess.Popen(argv, env=env) for _ in range(workers)]
    logger.info("Started %d workers (pids %s); metrics in %s", workers,
                ", ".join(str(c.pid) for c in children), metrics_dir)
    stopping = False

    def stop(*_) -> None:
        nonlocal stopping
        stopping = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    status = 0
    try:
        while not stopping:
            exited = [c for c in children if c.poll() is not None]
            if exited:
                status = exited[0].returncode
                logger.error("Worker %d exited with status %d; stopping the others",
                             exited[0].pid, status)
                break
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if temporary:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return status
