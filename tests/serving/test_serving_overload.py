"""Overload: a tiny batch queue under a burst answers UNAVAILABLE at once and memory stays flat."""

from __future__ import annotations

import asyncio
import time

import grpc
import orjson
import psutil
import pytest
from aiohttp import ClientSession, ClientTimeout
from tensorflow_serving.apis import prediction_service_pb2_grpc

from skewless.serving import config as config_lib
from skewless.serving.batching import QUEUE_FULL_MESSAGE
from skewless.serving.server import ModelServer, ServerOptions
from tests.serving import example_models
from tests.serving.conftest import CLIENT_TIMEOUT, install_version, predict_request

pytestmark = pytest.mark.e2e

BURST = 300


@pytest.fixture(scope="module")
def tiny_queue_server(tmp_path_factory, models):
    base = str(tmp_path_factory.mktemp("overload") / "taxi")
    install_version(models.taxi_v1, base, 1)
    options = ServerOptions(
        models=config_lib.single_model_config("taxi", base),
        port=0,
        rest_api_port=0,
        file_system_poll_wait_seconds=0,
        batching=config_lib.BatchingConfig(
            max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1
        ),
    )
    server = ModelServer(options).start()
    yield server
    server.stop()


async def rest_burst(port: int) -> list[tuple[int, dict, float]]:
    body = orjson.dumps({"instances": example_models.taxi_rows(1)})
    url = f"http://127.0.0.1:{port}/v1/models/taxi:predict"
    async with ClientSession(timeout=ClientTimeout(total=CLIENT_TIMEOUT)) as session:
        async def one():
            start = time.perf_counter()
            async with session.post(url, data=body) as response:
                return response.status, await response.json(), time.perf_counter() - start

        return await asyncio.gather(*(one() for _ in range(BURST)))


async def grpc_burst(port: int) -> list[tuple[grpc.StatusCode, str, float]]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_request(rows=example_models.taxi_rows(1))

        async def one():
            start = time.perf_counter()
            try:
                await stub.Predict(request, timeout=CLIENT_TIMEOUT)
                return grpc.StatusCode.OK, "", time.perf_counter() - start
            except grpc.aio.AioRpcError as error:
                return error.code(), error.details(), time.perf_counter() - start

        return await asyncio.gather(*(one() for _ in range(BURST)))


def test_rest_burst_gets_503_quickly(tiny_queue_server):
    started = time.perf_counter()
    results = asyncio.run(rest_burst(tiny_queue_server.rest_port))
    elapsed = time.perf_counter() - started
    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 503}
    rejected = [(body, seconds) for status, body, seconds in results if status == 503]
    assert len(rejected) > BURST // 10 and statuses.count(200) >= 1
    assert all(body == {"error": QUEUE_FULL_MESSAGE} for body, _ in rejected)
    assert elapsed < 15  # nothing hangs
    rejection_times = sorted(seconds for _, seconds in rejected)
    assert rejection_times[len(rejection_times) // 2] < 2.0


def test_grpc_burst_gets_unavailable_and_memory_stays_bounded(tiny_queue_server):
    process = psutil.Process()
    asyncio.run(grpc_burst(tiny_queue_server.grpc_port))  # warm up allocations
    baseline = process.memory_info().rss
    for _ in range(4):
        results = asyncio.run(grpc_burst(tiny_queue_server.grpc_port))
        codes = [code for code, _, _ in results]
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
        assert codes.count(grpc.StatusCode.UNAVAILABLE) > BURST // 10
        assert all(details == QUEUE_FULL_MESSAGE for code, details, _ in results
                   if code == grpc.StatusCode.UNAVAILABLE)
    growth = process.memory_info().rss - baseline
    assert growth < 64 * 1024 * 1024, f"RSS grew by {growth / 2**20:.0f} MiB"
