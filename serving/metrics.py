"""Prometheus metrics with TF Serving's names (``/tensorflow/serving/...`` as ``:tensorflow:...``).

Request count and latency by model, API, entrypoint and status; request log records by model
and status code; batch sizes, padding and queueing
latency of the batching layer. Each server has its own registry.

Under ``skewless serve --workers N`` each process writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode, chosen by that variable when
the process starts), and whichever process answers a scrape sums every process's files.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def exponential_buckets(scale: float, growth: float, count: int) -> list[float]:
    """TensorFlow's ``Buckets::Exponential(scale, growth, count)`` upper bounds."""
    return [scale * growth**i for i in range(count)]


class ServingMetrics:
    """The metrics one model server exposes.

    Args:
        registry: Where to register; a fresh registry when omitted.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        if registry is None:
            # process_cpu_seconds_total and process_resident_memory_bytes: what a remote
            # `skewless loadtest --prometheus-url` reads the server's CPU and RSS from.
            ProcessCollector(registry=self.registry)
        self.request_count = Counter(
            ":tensorflow:serving:request_count",
            "The total number of requests.",
            ["model_name", "API", "entrypoint", "status"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for requests.",
            ["model_name", "API", "entrypoint", "status"],
            buckets=exponential_buckets(10, 1.8, 33),
            registry=self.registry,
        )
        self.input_batch_size = Histogram(
            ":tensorflow:serving:batching_session:input_batch_size",
            "Tracks the batch size distribution on the inputs by model_name (if available).",
            ["model_name", "thread_pool_name"],
            buckets=exponential_buckets(1, 2, 14),
            registry=self.registry,
        )
        self.processed_batch_size = Histogram(
            ":tensorflow:serving:batching_session:processed_batch_size",
            "Tracks the batch size distribution on processing by model_name (if available).",
            ["model_name", "thread_pool_name"],
            buckets=exponential_buckets(1, 2, 14),
            registry=self.registry,
        )
        self.padding_size = Histogram(
            ":tensorflow:serving:batching_session:padding_size",
            "Tracks the padding size distribution on batches by model_name (if available).",
            ["model_name", "thread_pool_name"],
            buckets=exponential_buckets(1, 2, 14),
            registry=self.registry,
        )
        self.queuing_latency = Histogram(
            ":tensorflow:serving:batching_session:queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing",
            ["model_name", "thread_pool_name"],
            buckets=exponential_buckets(100, 1.2, 52),
            registry=self.registry,
        )
        self.request_log_count = Counter(
            ":tensorflow:serving:request_log_count",
            "The total number of requests logged from the model server sliced down by "
            "model_name and status code.",
            ["model_name", "status_code"],
            registry=self.registry,
        )
        self._request_children: dict[tuple, tuple] = {}

    def record_request(
        self, model: str, api: str, entrypoint: str, status: str, seconds: float
    ) -> None:
        """Counts one request and its latency."""
        key = (model, api, entrypoint, status)
        children = self._request_children.get(key)
        if children is None:
            children = (self.request_count.labels(*key), self.request_latency.labels(*key))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds * 1e6)

    def count_request_logs(self, model: str, status_code: str, count: int) -> None:
        """Counts logged (OK), dropped (RESOURCE_EXHAUSTED) or failed (INTERNAL) log records."""
        self.request_log_count.labels(model, status_code).inc(count)

    def batch_recorder(self, thread_pool_name: str):
        """A callback for the batch scheduler that records one processed batch."""

        def record(model: str, size: int, padded: int, delays: list[float]) -> None:
            self.input_batch_size.labels(model, thread_pool_name).observe(size)
            self.processed_batch_size.labels(model, thread_pool_name).observe(padded)
            self.padding_size.labels(model, thread_pool_name).observe(padded - size)
            queuing = self.queuing_latency.labels(model, thread_pool_name)
            for delay in delays:
                queuing.observe(delay * 1e6)

        return record

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric (summed over the workers' processes)."""
        multiproc_dir = os.environ.get(MULTIPROC_DIR_ENV)
        if not multiproc_dir:
            return generate_latest(self.registry)
        totals = CollectorRegistry()
        MultiProcessCollector(totals, path=multiproc_dir)
        return generate_latest(totals)
