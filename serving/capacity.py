"""Capacity planning from a load test: replicas for a peak, autoscaling targets, batching.

Replicas: one replica holds ``capacity`` requests per second under the SLO (the knee). Planned at
``1 - headroom`` of that, a peak of ``peak_qps`` needs ``ceil(peak_qps / (capacity * (1 -
headroom)))`` replicas.

Autoscaling fires at the same fraction of what was measured, never at a utilisation the server
cannot reach: the CPU target is ``(1 - headroom) * cpu_at_knee / cpu_request`` (a server that
tops out at 60% never reaches a 70% target), and the requests-per-second target, for a metric
served through the Prometheus adapter, is ``(1 - headroom) * capacity``.

Batching, following TF Serving's batching guide: ``num_batch_threads`` is the number of cores;
``max_batch_size`` is tuned with a long ``batch_timeout_micros``; then ``batch_timeout_micros`` is
tuned from 0 upward with that size. A setting is kept when it meets the SLO and brings more than
:data:`BETTER` over the best so far, so ties go to the smaller batch and the shorter timeout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from skewless.serving import session_bundle_config_pb2
from skewless.serving.loadtest import LoadTestResult, Step

BETTER = 1.05
LONG_TIMEOUT_MICROS = 100_000
MAX_BATCH_SIZES = (1, 4, 8, 16, 32, 64, 128, 256)
BATCH_TIMEOUTS_MICROS = (0, 500, 1000, 2000, 5000, 10000)


@dataclass(frozen=True)
class Recommendation:
    """What one replica holds and what a deployment needs."""

    capacity_requests_per_second: float
    capacity_rows_per_second: float
    max_rows_per_second_under_slo: float
    knee_load: float
    knee_p99_ms: float
    peak_qps: float | None
    headroom: float
    replicas: int | None
    cpu_at_knee: float | None
    target_cpu_utilization: int | None
    target_requests_per_second: float


def replicas_for(peak_qps: float, capacity: float, headroom: float) -> int:
    """Replicas that hold ``peak_qps`` with each at ``1 - headroom`` of its capacity."""
    if capacity <= 0:
        raise ValueError("capacity must be positive")
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom must be in [0, 1), got {headroom}")
    return max(1, math.ceil(peak_qps / (capacity * (1 - headroom)) - 1e-9))


def cpu_target(cpu_at_knee: float, cpu_request: float, headroom: float) -> int:
    """The HPA CPU utilisation target (percent of the request) at ``1 - headroom`` of the knee."""
    return max(1, min(100, math.floor(100 * (1 - headroom) * cpu_at_knee / cpu_request)))


def recommend(result: LoadTestResult, *, headroom: float, peak_qps: float | None = None,
              cpu_request: float | None = None) -> Recommendation | None:
    """The recommendation of a load test, or None when no step met the SLO.

    Args:
        result: The load test.
        headroom: Fraction of the capacity kept free, in [0, 1).
        peak_qps: Peak requests per second to plan replicas for.
        cpu_request: CPU cores a replica requests (the HPA's 100%).
    """
    knee: Step | None = result.knee_step
    if knee is None:
        return None
    cpu_percent = None
    if knee.server_cpu_cores is not None and cpu_request:
        cpu_percent = cpu_target(knee.server_cpu_cores, cpu_request, headroom)
    return Recommendation(
        capacity_requests_per_second=knee.requests_per_second,
        capacity_rows_per_second=knee.rows_per_second,
        max_rows_per_second_under_slo=result.max_rows_per_second_under_slo or 0.0,
        knee_load=knee.load,
        knee_p99_ms=knee.p99_ms or 0.0,
        peak_qps=peak_qps,
        headroom=headroom,
        replicas=None if peak_qps is None else replicas_for(
            peak_qps, knee.requests_per_second, headroom),
        cpu_at_knee=knee.server_cpu_cores,
        target_cpu_utilization=cpu_percent,
        target_requests_per_second=round((1 - headroom) * knee.requests_per_second, 1),
    )


@dataclass(frozen=True)
class BatchingTrial:
    """One batching setting and the step measured with it."""

    max_batch_size: int
    batch_timeout_micros: int
    step: Step


def best_trial(trials: list[BatchingTrial]) -> BatchingTrial | None:
    """The first SLO-meeting trial that no later one beats by more than :data:`BETTER`."""
    best = None
    for trial in trials:
        if trial.step.meets_slo and (
                best is None or trial.step.rows_per_second > BETTER * best.step.rows_per_second):
            best = trial
    return best


def batching_parameters(num_batch_threads: int, max_batch_size: int, batch_timeout_micros: int,
                        max_enqueued_batches: int) -> session_bundle_config_pb2.BatchingParameters:
    """TF Serving's BatchingParameters message."""
    params = session_bundle_config_pb2.BatchingParameters()
    params.num_batch_threads.value = num_batch_threads
    params.max_batch_size.value = max_batch_size
    params.batch_timeout_micros.value = batch_timeout_micros
    params.max_enqueued_batches.value = max_enqueued_batches
    return params
