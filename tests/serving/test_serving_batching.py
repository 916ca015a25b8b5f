"""Batching: concurrent single-row clients are merged into batches and get their own rows back."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf

from skewless.serving.client import GrpcClient, RestClient
from tests.serving import example_models
from tests.serving.conftest import CLIENT_TIMEOUT

pytestmark = pytest.mark.e2e


def _batch_histogram(metrics_text: str) -> dict[float, float]:
    pattern = re.compile(
        r':tensorflow:serving:batching_session:input_batch_size_bucket\{le="([^"]+)",'
        r'model_name="taxi",thread_pool_name="batch_threads"\} (\S+)'
    )
    return {float(le): float(count) for le, count in pattern.findall(metrics_text)}


def test_32_concurrent_single_row_clients_are_batched(contract_server, contract_root):
    rows = example_models.taxi_rows(32 * 6, seed=3)
    loaded = tf.saved_model.load(f"{contract_root}/taxi/1")
    expected = loaded.signatures["serving_default"](
        **{k: tf.constant(v) for k, v in example_models.taxi_columns(rows).items()}
    )["probabilities"].numpy()
    before = _batch_histogram(contract_server.metrics.exposition().decode())
    barrier = threading.Barrier(32)
    answers: dict[int, float] = {}

    def client(worker: int) -> None:
        use_rest = worker % 2 == 0
        make = RestClient if use_rest else GrpcClient
        port = contract_server.rest_port if use_rest else contract_server.grpc_port
        with make(port=port, timeout=CLIENT_TIMEOUT, retries=0) as c:
            c.predict("taxi", rows[:1])  # fetch metadata before the race starts
            barrier.wait(CLIENT_TIMEOUT)
            for index in range(worker, len(rows), 32):
                answers[index] = float(c.predict("taxi", [rows[index]])["probabilities"][0])

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(client, range(32)))
    assert sorted(answers) == list(range(len(rows)))
    got = np.array([answers[i] for i in range(len(rows))])
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    after = _batch_histogram(contract_server.metrics.exposition().decode())
    batches_of_one = after[1.0] - before.get(1.0, 0.0)
    all_batches = after[float("inf")] - before.get(float("inf"), 0.0)
    assert all_batches - batches_of_one > 0, "no batch larger than one row was formed"
    assert all_batches < len(rows) + 32  # fewer model calls than requests


def test_a_request_larger_than_max_batch_size_is_split(contract_server, rest):
    rows = example_models.taxi_rows(40, seed=4)  # max_batch_size is 16
    whole = rest.predict("taxi", rows)
    parts = np.concatenate([rest.predict("taxi", rows[i:i + 8])["probabilities"]
                            for i in range(0, 40, 8)])
    np.testing.assert_allclose(whole["probabilities"], parts, atol=1e-6, rtol=0)
