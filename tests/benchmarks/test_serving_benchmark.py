"""The serving benchmark's own arithmetic: the handler p99 read from two Prometheus scrapes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "serving_benchmark", Path(__file__).resolve().parents[2] / "benchmarks" / "serving.py")
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)

INF = float("inf")


def test_the_quantile_counts_only_what_happened_between_the_scrapes():
    before = {10.0: 50.0, 20.0: 50.0, 40.0: 50.0, INF: 50.0}  # warm-up: all fast
    after = {10.0: 50.0, 20.0: 50.0, 40.0: 150.0, INF: 150.0}  # the cell: 100 in (20, 40]
    assert bench.histogram_quantile(before, after, 0.99) == pytest.approx(39.8)
    assert bench.histogram_quantile(before, after, 0.5) == pytest.approx(30.0)


def test_the_quantile_interpolates_inside_its_bucket_and_stops_at_the_last_bound():
    after = {10.0: 90.0, 20.0: 99.0, 40.0: 100.0, INF: 100.0}
    assert bench.histogram_quantile({}, after, 0.5) == pytest.approx(50 / 90 * 10)
    assert bench.histogram_quantile({}, after, 0.99) == pytest.approx(20.0)
    overflow = {10.0: 0.0, INF: 4.0}  # beyond the largest bucket: its lower bound
    assert bench.histogram_quantile({}, overflow, 0.99) == 10.0
    assert bench.histogram_quantile(after, after, 0.99) is None


def test_the_table_shows_the_handler_p99_beside_the_clients():
    cell = {"server": "skewless serve (batching)", "transport": "grpc", "processes": 1,
            "concurrency": 64, "rows_per_request": 1, "rows_per_s": 1263.6, "p50_ms": 50.0,
            "p99_ms": 84.5, "handler_p99_ms": 37.2, "errors": 0, "client_cpu_cores": 0.28,
            "steal_pct": 0.3}
    assert bench._row(cell) == (
        "| skewless serve (batching) | grpc | 1 | 64 | 1 | 1,264 | 50.0 | 84.5 | 37.2 | 0 | "
        "0.28 | 0 |")
