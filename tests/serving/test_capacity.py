"""Capacity arithmetic: replicas for a peak, autoscaling targets, the batching pick."""

from __future__ import annotations

import math

import pytest

from skewless.serving import capacity
from skewless.serving.loadtest import LoadTestResult, Step, find_knee


def step(load: float, rows_per_second: float, p99_ms: float = 10.0, meets_slo: bool = True,
         cpu: float | None = 1.0) -> Step:
    return Step(load=load, mode="concurrency", seconds=1.0, requests=int(rows_per_second),
                rows_per_second=rows_per_second, requests_per_second=rows_per_second,
                p50_ms=p99_ms / 2, p90_ms=p99_ms, p99_ms=p99_ms, errors=0, timeouts=0,
                error_rate=0.0, server_cpu_cores=cpu, server_rss_mb=100.0,
                gpu_utilization=None, gpu_memory_mb=None, generator_processes=1,
                generator_cpu_cores=0.2, generator_saturated=False, meets_slo=meets_slo)


def result(*steps: Step) -> LoadTestResult:
    return LoadTestResult(target={}, ramp={"mode": "concurrency"},
                          slo={"p99_ms": 100.0, "max_error_rate": 0.01}, steps=steps,
                          stopped="ramp complete", knee=find_knee(steps))


@pytest.mark.parametrize(
    ("peak", "capacity_rps", "headroom", "replicas"),
    [(1000, 300, 0.0, 4), (900, 300, 0.0, 3), (1000, 300, 0.3, 5), (100, 1000, 0.5, 1),
     (2100, 1000, 0.3, 3), (2101, 1000, 0.3, 4)],
)
def test_replicas_follow_the_formula(peak, capacity_rps, headroom, replicas):
    assert capacity.replicas_for(peak, capacity_rps, headroom) == replicas
    assert replicas == max(1, math.ceil(peak / (capacity_rps * (1 - headroom)) - 1e-9))


def test_the_knee_is_where_throughput_stops_growing_under_the_slo():
    steps = (step(1, 400), step(4, 1200), step(16, 1500), step(64, 1540, p99_ms=90),
             step(128, 1300, p99_ms=400, meets_slo=False))
    assert find_knee(steps) == 2  # 1500 >= 95% of the best SLO-meeting 1540
    assert find_knee((step(1, 10, meets_slo=False),)) is None


def test_recommendation_scales_below_what_the_server_reached():
    # At the knee the server used 1.2 cores of its 2-core request: a 70% target would never fire.
    r = capacity.recommend(result(step(1, 300, cpu=0.5), step(8, 1000, cpu=1.2)),
                           headroom=0.25, peak_qps=5000, cpu_request=2.0)
    assert r.capacity_requests_per_second == 1000
    assert r.replicas == 7  # ceil(5000 / 750)
    assert r.target_cpu_utilization == 45  # floor(100 * 0.75 * 1.2 / 2)
    assert r.target_cpu_utilization < 100 * 1.2 / 2.0
    assert r.target_requests_per_second == 750.0


def test_no_recommendation_without_a_step_under_the_slo():
    assert capacity.recommend(result(step(1, 50, meets_slo=False)), headroom=0.3) is None


@pytest.mark.parametrize("headroom", [-0.1, 1.0, 1.5])
def test_headroom_outside_zero_one_is_refused(headroom):
    with pytest.raises(ValueError, match="headroom"):
        capacity.replicas_for(100, 10, headroom)


def test_batching_pick_prefers_the_smaller_setting_unless_clearly_better():
    trials = [capacity.BatchingTrial(size, 100_000, step(64, rate, meets_slo=ok))
              for size, rate, ok in ((4, 900, True), (16, 1500, True), (32, 1540, True),
                                     (128, 3000, False))]
    assert capacity.best_trial(trials).max_batch_size == 16
    assert capacity.best_trial(trials[3:]) is None
