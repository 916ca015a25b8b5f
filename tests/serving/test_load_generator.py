"""The load generator against a loopback HTTP server that answers one request at a time."""

from __future__ import annotations

import asyncio
import threading

import pytest
from aiohttp import web

from skewless.serving.load_generator import Share, Target, run_share, split_level

SERVICE_SECONDS = 0.02


@pytest.fixture()
def one_at_a_time():
    """A server taking SERVICE_SECONDS per request, one request at a time; its port."""
    lock = asyncio.Lock()

    async def predict(request: web.Request) -> web.Response:
        await request.read()
        async with lock:
            await asyncio.sleep(SERVICE_SECONDS)
        if request.headers.get("X-Fail"):
            return web.json_response({"error": "no"}, status=400)
        return web.json_response({"predictions": [1]})

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/models/m:predict", predict)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield port
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def target(port: int, timeout: float = 5.0) -> Target:
    return Target("rest", "127.0.0.1", port, "/v1/models/m:predict", (b'{"instances":[1]}',),
                  timeout)


def test_closed_loop_callers_queue_behind_a_serial_server(one_at_a_time):
    result = run_share(target(one_at_a_time), Share("concurrency", 4, 1.0))
    assert result.errors == result.timeouts == 0
    # One at a time: about 1 / SERVICE_SECONDS answers per second, whatever the callers.
    assert 15 <= len(result.latencies) <= 1.2 / SERVICE_SECONDS
    # Four callers wait for each other: a typical answer takes about four service times.
    median = sorted(result.latencies)[len(result.latencies) // 2]
    assert median >= 3 * SERVICE_SECONDS


def test_open_loop_counts_latency_from_the_schedule(one_at_a_time):
    # Offered twice what the server can do: the queue grows, and so must the latencies, although
    # each request, once sent, is answered in one service time.
    result = run_share(target(one_at_a_time), Share("rate", 2 / SERVICE_SECONDS, 1.0))
    answered = sorted(result.latencies)
    assert answered and result.errors == 0
    assert answered[-1] > 10 * SERVICE_SECONDS


def test_timeouts_are_counted_apart_from_errors(one_at_a_time):
    result = run_share(target(one_at_a_time, timeout=SERVICE_SECONDS / 4),
                       Share("concurrency", 2, 0.3))
    assert result.timeouts > 0 and result.errors == 0 and not result.latencies


def test_levels_split_over_workers():
    assert split_level(7, 3, "concurrency") == [3.0, 2.0, 2.0]
    assert split_level(90, 3, "rate") == [30.0, 30.0, 30.0]


def test_grpc_requests_take_turns_over_the_given_number_of_connections():
    """``connections``: distinct TCP connections (what --workers spreads), used in turn."""
    import grpc

    peers: dict[str, int] = {}

    async def predict(request: bytes, context) -> bytes:
        peers[context.peer()] = peers.get(context.peer(), 0) + 1
        return b""

    async def main() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "tensorflow.serving.PredictionService",
            {"Predict": grpc.unary_unary_rpc_method_handler(predict)})])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            target = Target("grpc", "127.0.0.1", port,
                            "/tensorflow.serving.PredictionService/Predict", (b"",), 5.0,
                            connections=3)
            result = await asyncio.to_thread(run_share, target, Share("concurrency", 6, 0.5))
            assert result.errors == result.timeouts == 0 and result.latencies
        finally:
            await server.stop(None)

    asyncio.run(main())
    assert len(peers) == 3
    assert max(peers.values()) - min(peers.values()) <= 6  # in turn: within one round of callers
