"""Load generation for ``skewless loadtest``: closed-loop and open-loop steps in worker processes.

A worker process sends pre-encoded Predict requests (REST JSON bodies or serialized gRPC
``PredictRequest`` bytes) and measures each latency; it never imports TensorFlow, so that a few
of them start in about a second and spend their CPU on the requests. The parent hands each worker
its share of a step (concurrent callers, or requests per second) and merges what they return.

Closed loop: ``level`` callers each send a request as soon as the previous one is answered.
Open loop: requests start on a fixed schedule at ``level`` per second whatever the answers, and a
latency counts from the scheduled start, so a slow server cannot hide its queue (no coordinated
omission).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass, field
from typing import Literal

Transport = Literal["rest", "grpc"]
Mode = Literal["concurrency", "rate"]
# Open loop: more requests in flight than this are not sent and count as errors.
MAX_IN_FLIGHT = 4096


@dataclass(frozen=True)
class Target:
    """Where requests go and what they carry.

    Attributes:
        transport: ``rest`` or ``grpc``.
        host: Server host.
        port: REST or gRPC port.
        path: REST path (``/v1/models/NAME:predict``) or gRPC method
            (``/tensorflow.serving.PredictionService/Predict``).
        bodies: Encoded requests, sent round-robin.
        timeout: Seconds before a request counts as timed out.
        connections: gRPC channels (TCP connections) per worker process, used in turn. A
            server with ``--workers N`` shares connections, not requests, among its
            processes, so one connection reaches one of them. REST opens one connection per
            concurrent request.
    """

    transport: Transport
    host: str
    port: int
    path: str
    bodies: tuple[bytes, ...]
    timeout: float
    connections: int = 1


@dataclass(frozen=True)
class Share:
    """One worker's part of a step: ``level`` callers (closed loop) or requests/s (open loop)."""

    mode: Mode
    level: float
    seconds: float


@dataclass
class WorkerResult:
    """What one worker measured in one step."""

    latencies: list[float] = field(default_factory=list)  # seconds, answered requests
    errors: int = 0
    timeouts: int = 0
    error_messages: dict[str, int] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_messages) < 20 or message in self.error_messages:
            self.error_messages[message] = self.error_messages.get(message, 0) + 1


class _Sender:
    """Sends one request; raises TimeoutError, or returns an error message or None."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._session = None
        self._channels: list = []
        self._calls: list = []
        self._sent = 0

    async def __aenter__(self) -> _Sender:
        t = self.target
        if t.transport == "rest":
            import aiohttp

            self._url = f"http://{t.host}:{t.port}{t.path}"
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=t.timeout),
                headers={"Content-Type": "application/json"},
            )
        else:
            import grpc

            # A local subchannel pool: channels of the same options would share one connection.
            options = [("grpc.max_receive_message_length", 256 * 1024 * 1024),
                       ("grpc.use_local_subchannel_pool", 1)]
            self._channels = [grpc.aio.insecure_channel(f"{t.host}:{t.port}", options=options)
                              for _ in range(t.connections)]
            # No serializers: the request is already bytes, the answer stays bytes.
            self._calls = [channel.unary_unary(t.path) for channel in self._channels]
        return self

    async def __aexit__(self, *exc_info) -> None:
        if self._session is not None:
            await self._session.close()
        for channel in self._channels:
            await channel.close()

    async def send(self, body: bytes) -> str | None:
        if self._session is not None:
            async with self._session.post(self._url, data=body) as response:
                data = await response.read()
                if response.status == 200:
                    return None
                if response.status == 504:
                    raise TimeoutError
                return f"HTTP {response.status}: {data[:200].decode('utf-8', 'replace')}"
        import grpc

        self._sent += 1
        call = self._calls[self._sent % len(self._calls)]
        try:
            await call(body, timeout=self.target.timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError from None
            return f"{error.code().name}: {(error.details() or '')[:200]}"
        return None


async def _measure(sender: _Sender, body: bytes, started: float, result: WorkerResult) -> None:
    try:
        message = await sender.send(body)
    except TimeoutError:
        result.timeouts += 1
        return
    except Exception as error:  # noqa: BLE001 - any transport failure is a failed request
        result.error(f"{type(error).__name__}: {str(error)[:200]}")
        return
    if message is None:
        result.latencies.append(time.perf_counter() - started)
    else:
        result.error(message)


async def _closed_loop(sender: _Sender, share: Share, result: WorkerResult) -> None:
    bodies = sender.target.bodies
    deadline = time.perf_counter() + share.seconds

    async def caller(offset: int) -> None:
        index = offset
        while time.perf_counter() < deadline:
            await _measure(sender, bodies[index % len(bodies)], time.perf_counter(), result)
            index += 1

    await asyncio.gather(*(caller(i) for i in range(int(share.level))))


async def _open_loop(sender: _Sender, share: Share, result: WorkerResult) -> None:
    bodies = sender.target.bodies
    interval = 1.0 / share.level
    start = time.perf_counter()
    count = int(share.seconds * share.level)
    in_flight: set[asyncio.Task] = set()
    for index in range(count):
        scheduled = start + index * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= MAX_IN_FLIGHT:
            result.error(f"load generator: more than {MAX_IN_FLIGHT} requests in flight")
            continue
        task = asyncio.create_task(
            _measure(sender, bodies[index % len(bodies)], scheduled, result))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight, timeout=sender.target.timeout + 1.0)
        for task in list(in_flight):
            task.cancel()
            result.timeouts += 1


async def _run_share(target: Target, share: Share) -> WorkerResult:
    result = WorkerResult()
    cpu, wall = time.process_time(), time.perf_counter()
    async with _Sender(target) as sender:
        if share.level > 0:
            if share.mode == "concurrency":
                await _closed_loop(sender, share, result)
            else:
                await _open_loop(sender, share, result)
    result.cpu_seconds = time.process_time() - cpu
    result.wall_seconds = time.perf_counter() - wall
    return result


def run_share(target: Target, share: Share) -> WorkerResult:
    """Runs one worker's share of a step in this process."""
    return asyncio.run(_run_share(target, share))


def _worker_main(connection, target: Target) -> None:
    while True:
        share = connection.recv()
        if share is None:
            return
        connection.send(run_share(target, share))


def split_level(level: float, workers: int, mode: Mode) -> list[float]:
    """Divides a step's callers (whole numbers) or rate among workers."""
    if mode == "rate":
        return [level / workers] * workers
    base, extra = divmod(int(level), workers)
    return [float(base + (1 if i < extra else 0)) for i in range(workers)]


class WorkerPool:
    """Worker processes (spawned, so none inherits TensorFlow's threads) for one target.

    Args:
        target: What to send where.
        processes: How many worker processes.
    """

    def __init__(self, target: Target, processes: int) -> None:
        self.target = target
        context = multiprocessing.get_context("spawn")
        self._workers = []
        for _ in range(processes):
            parent, child = context.Pipe()
            process = context.Process(target=_worker_main, args=(child, target), daemon=True)
            process.start()
            self._workers.append((process, parent))

    @property
    def processes(self) -> int:
        return len(self._workers)

    def run(self, mode: Mode, level: float, seconds: float) -> list[WorkerResult]:
        """Runs one step on every worker at once; returns each worker's result."""
        shares = split_level(level, len(self._workers), mode)
        for (_, connection), part in zip(self._workers, shares, strict=True):
            connection.send(Share(mode, part, seconds))
        results = []
        for process, connection in self._workers:
            if not connection.poll(seconds + self.target.timeout + 60):
                raise RuntimeError(f"load generator process {process.pid} did not answer")
            results.append(connection.recv())
        return results

    def close(self) -> None:
        for _, connection in self._workers:
            try:
                connection.send(None)
            except (BrokenPipeError, OSError):
                pass
        for process, _ in self._workers:
            process.join(5)
            if process.is_alive():
                process.kill()
        self._workers = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
