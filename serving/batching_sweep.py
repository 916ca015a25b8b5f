"""``skewless loadtest --sweep-batching``: TF Serving's batching guide, measured.

Each setting gets its own in-process :class:`ModelServer` on free loopback ports, the same server
``skewless serve`` runs, and one closed-loop step at a fixed concurrency from worker processes.
First ``max_batch_size`` with a long ``batch_timeout_micros``, then ``batch_timeout_micros`` from
0 upward with the best size; ``num_batch_threads`` is the number of cores throughout.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skewless.serving.capacity import LONG_TIMEOUT_MICROS, BatchingTrial, best_trial
from skewless.serving.config import BatchingConfig, single_model_config
from skewless.serving.load_generator import WorkerPool
from skewless.serving.loadtest import Ramp, Slo, prepare_target, summarize_step
from skewless.serving.resources import Monitors, ProcMonitor


@dataclass(frozen=True)
class SweepResult:
    """Every trial, in order, and the recommended setting."""

    num_batch_threads: int
    size_trials: tuple[BatchingTrial, ...]
    timeout_trials: tuple[BatchingTrial, ...]
    best: BatchingTrial | None


def enqueued_batches(threads: int, concurrency: int, max_batch_size: int) -> int:
    """A queue that holds every caller's request, plus one batch per thread in progress."""
    return threads + math.ceil(concurrency / max_batch_size)


def _trial(model_base_path: str, model_name: str, rows: Sequence[Mapping[str, Any]],
           transport: str, batching: BatchingConfig, ramp: Ramp, level: int, slo: Slo,
           timeout: float) -> BatchingTrial:
    from skewless.serving.server import ModelServer, ServerOptions

    options = ServerOptions(
        models=single_model_config(model_name, model_base_path), port=0, rest_api_port=0,
        file_system_poll_wait_seconds=0, batching=batching, enable_model_warmup=False)
    with ModelServer(options) as server:
        port = server.rest_port if transport == "rest" else server.grpc_port
        target = prepare_target(transport, "127.0.0.1", port, model_name, rows,
                                rows_per_request=ramp.rows_per_request, timeout=timeout)
        # The server shares this process: /proc of this pid is the server plus a quiet parent.
        monitors = Monitors([ProcMonitor(os.getpid())])
        with WorkerPool(target, ramp.processes or 1) as pool:
            pool.run("concurrency", level, min(1.0, ramp.step_seconds))  # warm up
            monitors.start()
            results = pool.run("concurrency", level, ramp.step_seconds)
            usage = monitors.stop()
    step = summarize_step(level, ramp, results, usage, slo)
    return BatchingTrial(batching.max_batch_size, batching.batch_timeout_micros, step)


def sweep_batching(
    model_base_path: str,
    model_name: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    transport: str,
    concurrency: int,
    max_batch_sizes: Sequence[int],
    batch_timeouts_micros: Sequence[int],
    slo: Slo,
    step_seconds: float,
    processes: int | None = None,
    rows_per_request: int = 1,
    timeout: float = 10.0,
    on_trial: Callable[[str, BatchingTrial], None] = lambda phase, trial: None,
) -> SweepResult:
    """Runs the sweep; see the module docstring.

    Raises:
        ServingError: A server did not answer its first request.
    """
    threads = os.cpu_count() or 1
    ramp = Ramp("concurrency", (float(concurrency),), step_seconds, rows_per_request, processes)

    def run(size: int, timeout_micros: int, phase: str) -> BatchingTrial:
        batching = BatchingConfig(
            max_batch_size=size, batch_timeout_micros=timeout_micros,
            max_enqueued_batches=enqueued_batches(threads, concurrency, size),
            num_batch_threads=threads)
        trial = _trial(model_base_path, model_name, rows, transport, batching, ramp,
                       concurrency, slo, timeout)
        on_trial(phase, trial)
        return trial

    size_trials = [run(size, LONG_TIMEOUT_MICROS, "max_batch_size") for size in max_batch_sizes]
    best_size = best_trial(size_trials)
    timeout_trials: list[BatchingTrial] = []
    if best_size is not None:
        timeout_trials = [run(best_size.max_batch_size, micros, "batch_timeout_micros")
                          for micros in batch_timeouts_micros]
    return SweepResult(threads, tuple(size_trials), tuple(timeout_trials),
                       best_trial(timeout_trials))
