"""The model server: the model manager, the gRPC and REST front ends, and their lifecycle.

Both front ends, REST (aiohttp) and gRPC (``grpc.aio``), run on one asyncio event loop (uvloop)
in a background thread and share the model manager and the batch scheduler, which lives on that
loop. Model calls run on threads, where TensorFlow releases the GIL. Ports open only after the
initial versions are loaded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import tensorflow as tf
import uvloop
from aiohttp import web

from skewless.serving import grpc_server
from skewless.serving.batching import BatchScheduler
from skewless.serving.config import (
    BatchingConfig,
    LoggingConfigError,
    ModelConfig,
    MonitoringConfig,
)
from skewless.serving.manager import ModelManager
from skewless.serving.metrics import ServingMetrics
from skewless.serving.request_log import DEFAULT_QUEUE_RECORDS, FileLimits, RequestLogs
from skewless.serving.rest_server import RestApi
from skewless.serving.service import InferenceService

logger = logging.getLogger("skewless.serving")

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_GRPC_MAX_MESSAGE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class ServerOptions:
    """Everything a :class:`ModelServer` needs (the ``skewless serve`` flags, parsed).

    Attributes:
        models: The models to serve.
        host: Address both front ends bind.
        port: gRPC port; 0 picks a free one.
        rest_api_port: REST port; 0 picks a free one; None disables REST.
        file_system_poll_wait_seconds: Seconds between base-path polls; 0 polls once.
        model_config_file: The file ``models`` was read from ("" when not from a file).
        model_config_file_poll_wait_seconds: Seconds between re-reads of ``model_config_file``
            that apply its changes (models added or removed, version policies, labels); 0
            never re-reads.
        batching: Batching parameters, or None to run each request on its own.
        monitoring: Prometheus settings.
        rest_api_timeout_in_ms: Deadline of a REST request; 0 for none.
        rest_api_max_body_bytes: Larger REST bodies are rejected with RESOURCE_EXHAUSTED (429).
        grpc_max_message_bytes: Largest gRPC message received or sent.
        enable_model_warmup: Replay warm-up requests before a version serves.
        tensorflow_intra_op_parallelism: TensorFlow intra-op threads (0: TensorFlow's choice).
        tensorflow_inter_op_parallelism: TensorFlow inter-op threads (0: TensorFlow's choice).
        num_request_threads: Threads running unbatched model calls (0: 4 per core).
        reuse_port: Bind with SO_REUSEPORT, so that several server processes share the ports
            (``skewless serve --workers N``) and the kernel spreads connections over them.
        worker_processes: How many processes share the ports (``--workers``). With more than
            one, HandleReloadConfigRequest is refused: it would reach only one of them.
        request_log_limits: When a request log file is complete (size, age).
        request_log_queue_records: Log records that may wait for the writer; more are dropped.
    """

    models: tuple[ModelConfig, ...]
    host: str = "127.0.0.1"
    port: int = 8500
    rest_api_port: int | None = 8501
    file_system_poll_wait_seconds: float = 1.0
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: float = 0.0
    batching: BatchingConfig | None = None
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    rest_api_timeout_in_ms: int = 30000
    rest_api_max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    grpc_max_message_bytes: int = DEFAULT_GRPC_MAX_MESSAGE_BYTES
    enable_model_warmup: bool = True
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    num_request_threads: int = 0
    reuse_port: bool = False
    worker_processes: int = 1
    request_log_limits: FileLimits = field(default_factory=FileLimits)
    request_log_queue_records: int = DEFAULT_QUEUE_RECORDS


def _session_config(options: ServerOptions) -> tf.compat.v1.ConfigProto:
    return tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=options.tensorflow_intra_op_parallelism,
        inter_op_parallelism_threads=options.tensorflow_inter_op_parallelism,
        allow_soft_placement=True,
    )


class ModelServer:
    """A TF-Serving-compatible model server.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with ModelServer(options) as server:
            print(server.grpc_port, server.rest_port)

    Args:
        options: The server options.
    """

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.metrics = ServingMetrics()
        self._request_executor = ThreadPoolExecutor(
            max_workers=options.num_request_threads or 4 * (os.cpu_count() or 1),
            thread_name_prefix="skewless-request",
        )
        self._scheduler: BatchScheduler | None = None
        if options.batching is not None:
            self._scheduler = BatchScheduler(
                options.batching, self.metrics.batch_recorder(options.batching.thread_pool_name)
            )
        self.request_logs = RequestLogs(
            options.request_log_limits,
            options.request_log_queue_records,
            self.metrics.count_request_logs,
        )
        self.manager = ModelManager(
            options.models,
            poll_seconds=options.file_system_poll_wait_seconds,
            session_config=_session_config(options),
            enable_warmup=options.enable_model_warmup,
            config_file=options.model_config_file,
            config_file_poll_seconds=options.model_config_file_poll_wait_seconds,
            on_change=self._models_changed,
        )
        self.service = InferenceService(
            self.manager, self._request_executor, self._scheduler, self.request_logs
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._grpc: grpc.aio.Server | None = None
        self._rest_runner: web.ServerRunner | None = None
        self._stopped = threading.Event()
        self.grpc_port: int | None = None
        self.rest_port: int | None = None

    def start(self) -> ModelServer:
        """Loads the initial models, then opens the ports.

        Returns:
            The server, started.

        Raises:
            ConfigError: A base path is missing or a label names an unavailable version.
            OSError: A port cannot be bound.
        """
        for model in self.options.models:
            logger.info("Adding model: %s (base path %s)", model.name, model.base_path)
        self.request_logs.update({m.name: m.logging for m in self.options.models})
        self.manager.start()
        self._loop = uvloop.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="skewless-serving-loop", daemon=True
        )
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._open_ports(), self._loop).result()
        except BaseException:
            self.stop()
            raise
        return self

    async def _open_ports(self) -> None:
        options = self.options
        self._grpc = grpc.aio.server(
            options=grpc_server.grpc_server_options(
                options.grpc_max_message_bytes, options.reuse_port
            ),
        )
        grpc_server.add_servicers(self._grpc, self.service, self.metrics,
                                  options.worker_processes)
        address = f"{options.host}:{options.port}"
        try:
            self.grpc_port = self._grpc.add_insecure_port(address)
        except RuntimeError as error:
            raise OSError(f"Cannot bind the gRPC port {address}: {error}") from None
        await self._grpc.start()
        logger.info("Running gRPC ModelServer at %s:%d ...", options.host, self.grpc_port)
        if options.rest_api_port is not None:
            api = RestApi(
                self.service,
                self.metrics,
                options.monitoring.prometheus_path
                if options.monitoring.prometheus_enabled else None,
                options.rest_api_timeout_in_ms / 1000,
                options.rest_api_max_body_bytes,
            )
            self._rest_runner = web.ServerRunner(api.server(), handle_signals=False)
            await self._rest_runner.setup()
            site = web.TCPSite(
                self._rest_runner, options.host, options.rest_api_port, backlog=1024,
                reuse_port=options.reuse_port or None,
            )
            await site.start()
            self.rest_port = site._server.sockets[0].getsockname()[1]
            logger.info("Exporting HTTP/REST API at:%s:%d ...", options.host, self.rest_port)

    async def _close_ports(self, grace: float) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None
        if self._rest_runner is not None:
            await self._rest_runner.cleanup()
            self._rest_runner = None

    def stop(self, grace: float = 5.0) -> None:
        """Closes the ports (letting requests in flight finish) and unloads every model."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._loop is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._close_ports(grace), self._loop).result(
                    grace + 10
                )
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                if self._thread is not None:
                    self._thread.join(10)
                self._loop.close()
        if self._scheduler is not None:
            self._scheduler.close()
        self.request_logs.close()
        self.manager.stop()
        self._request_executor.shutdown(wait=True)
        logger.info("Server stopped")

    def _models_changed(self, models: tuple[ModelConfig, ...]) -> None:
        """A hot reload: request logs follow the new configs, and open log files complete."""
        try:
            self.request_logs.update({m.name: m.logging for m in models})
        except LoggingConfigError as error:
            logger.error("Request logging unchanged: %s", error)

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until :meth:`stop` is called; returns whether it was."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
