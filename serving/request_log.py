"""Request logging: sampled requests and their answers as TF Serving's ``PredictionLog`` records.

Configured per model by TF Serving's own ``logging_config`` in the model config file::

    logging_config {
      log_collector_config { type: "tfrecord" filename_prefix: "/var/log/skewless/taxi" }
      sampling_config { sampling_rate: 0.1 }
    }

The released ``tensorflow_model_server`` registers no log collector; ``skewless serve`` has one,
of type ``tfrecord``. It writes uncompressed TFRecord files of serialized ``PredictionLog``s, one
record per logged Predict, Classify or Regress request, with ``log_metadata`` filled in (the model
spec with the version that served, the sampling config, the SavedModel tags, the time).

File contract, read by ``skewless monitor``: a file being written is named
``{filename_prefix}-{YYYYmmddTHHMMSSZ}-{pid}-{seq:05d}.tfrecord.tmp`` and is renamed without
``.tmp`` once complete: when it reaches its size or age limit, on a hot reload (new config or
versions) and at shutdown.

Requests are logged off the request path: the request thread only samples and puts a reference
to the request's tensors on a bounded queue; a writer thread builds, serializes and writes the
records. A full queue drops the record rather than wait, and counts it
(``:tensorflow:serving:request_log_count{status_code="RESOURCE_EXHAUSTED"}``); written records
count as ``status_code="OK"``, as TF Serving counts its ``/tensorflow/serving/request_log_count``.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    input_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)
from tensorflow_serving.config import logging_config_pb2

from skewless.serving import tensors
from skewless.serving.config import LoggingConfigError, LoggingSpec
from skewless.serving.responses import fill_model_spec

logger = logging.getLogger("skewless.serving")

LOG_SUFFIX = ".tfrecord"
PART_SUFFIX = ".tmp"
SERVE_TAG = "serve"

DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_FILE_SECONDS = 300.0
DEFAULT_QUEUE_RECORDS = 10_000

_ROTATE = object()  # queue marker: complete the current file (hot reload)


@dataclass(frozen=True)
class FileLimits:
    """When a log file is complete: its size, or its age since its first record."""

    max_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_seconds: float = DEFAULT_MAX_FILE_SECONDS


class LogFiles:
    """The rotating TFRecord files of one log stream (used by one thread)."""

    def __init__(self, prefix: str, limits: FileLimits) -> None:
        self._prefix = prefix
        self._limits = limits
        self._seq = 0
        self._writer: tf.io.TFRecordWriter | None = None
        self._path = ""
        self._bytes = 0
        self._opened = 0.0

    def write(self, record: bytes) -> None:
        """Appends one record, completing the file first when it is full."""
        if self._writer is not None and self._bytes + len(record) + 16 > self._limits.max_bytes:
            self.complete()
        if self._writer is None:
            self._open()
        self._writer.write(record)
        self._bytes += len(record) + 16  # length, its CRC, the data's CRC

    def seconds_left(self) -> float | None:
        """Seconds until the open file is old enough to complete (None: no file is open)."""
        if self._writer is None:
            return None
        return self._opened + self._limits.max_seconds - time.monotonic()

    def complete(self) -> str | None:
        """Closes the open file and gives it its final name; the name, or None."""
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        final = self._path[: -len(PART_SUFFIX)]
        os.replace(self._path, final)
        return final

    def _open(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self._seq += 1
        name = f"{self._prefix}-{stamp}-{os.getpid()}-{self._seq:05d}{LOG_SUFFIX}"
        self._path = name + PART_SUFFIX
        self._writer = tf.io.TFRecordWriter(self._path)
        self._bytes = 0
        self._opened = time.monotonic()


Builder = Callable[[], prediction_log_pb2.PredictionLog]
Counter = Callable[[str, str, int], None]  # (model name, status code name, count)


class RequestLogger:
    """Samples and writes the requests of the models sharing one ``logging_config``.

    Args:
        spec: The logging config.
        limits: When files are complete.
        queue_records: Records that may wait for the writer; beyond that they are dropped.
        count: Counts logged and dropped records for metrics.
    """

    def __init__(
        self,
        spec: LoggingSpec,
        limits: FileLimits = FileLimits(),
        queue_records: int = DEFAULT_QUEUE_RECORDS,
        count: Counter | None = None,
    ) -> None:
        folder = os.path.dirname(spec.filename_prefix)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            raise LoggingConfigError(
                f"cannot write request logs under {folder}: {error.strerror}"
            ) from None
        if not os.access(folder, os.W_OK):
            raise LoggingConfigError(f"cannot write request logs under {folder}: not writable")
        self.spec = spec
        self._sampling = logging_config_pb2.SamplingConfig.FromString(spec.sampling_config)
        self._files = LogFiles(spec.filename_prefix, limits)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_records)
        self._count = count or (lambda model, status, n: None)
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._write_loop, name="skewless-request-log", daemon=True
        )
        self._thread.start()

    def sampled(self) -> bool:
        """Whether this request is logged (uniformly at random, at the sampling rate)."""
        rate = self.spec.sampling_rate
        return rate >= 1.0 or (rate > 0.0 and random.random() < rate)

    def submit(self, model_name: str, build: Builder) -> bool:
        """Queues one record without waiting; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait((model_name, build))
        except queue.Full:
            self._count(model_name, "RESOURCE_EXHAUSTED", 1)
            return False
        return True

    def rotate(self) -> None:
        """Completes the current file once the records queued so far are written."""
        try:
            self._queue.put_nowait(_ROTATE)
        except queue.Full:
            pass  # the file completes by size or age instead

    def close(self, timeout: float = 30.0) -> None:
        """Writes what is queued, completes the file and stops the writer."""
        self._stopping.set()
        self._thread.join(timeout)

    def metadata(self, log: prediction_log_pb2.PredictionLog, name: str, version: int,
                 signature_name: str) -> None:
        """Fills a record's ``log_metadata``, as TF Serving's RequestLogger does."""
        meta = log.log_metadata
        fill_model_spec(meta.model_spec, name, version, signature_name)
        meta.sampling_config.CopyFrom(self._sampling)
        meta.saved_model_tags.append(SERVE_TAG)
        meta.timestamp_secs = int(time.time())

    def _write_loop(self) -> None:
        while True:
            left = self._files.seconds_left()
            try:
                item = self._queue.get(timeout=0.2 if left is None else max(0.0, min(left, 0.2)))
            except queue.Empty:
                if self._stopping.is_set():
                    break
                if left is not None and left <= 0:
                    self._complete()
                continue
            if item is _ROTATE:
                self._complete()
                continue
            self._write(*item)
        self._complete()

    def _write(self, model_name: str, build: Builder) -> None:
        try:
            self._files.write(build().SerializeToString())
        except Exception as error:  # noqa: BLE001 - a failed record must not stop logging
            logger.error("Request log record for %s not written: %s", model_name, error)
            self._count(model_name, "INTERNAL", 1)
            return
        self._count(model_name, "OK", 1)

    def _complete(self) -> None:
        try:
            self._files.complete()
        except OSError as error:
            logger.error("Request log file not completed: %s", error)


class RequestLogs:
    """The request loggers of a server, one per distinct ``logging_config`` (as TF Serving).

    Args:
        limits: When files are complete.
        queue_records: Records each logger's queue holds.
        count: Counts logged and dropped records for metrics.
    """

    def __init__(
        self,
        limits: FileLimits = FileLimits(),
        queue_records: int = DEFAULT_QUEUE_RECORDS,
        count: Counter | None = None,
    ) -> None:
        self._limits = limits
        self._queue_records = queue_records
        self._count = count
        self._by_spec: dict[LoggingSpec, RequestLogger] = {}
        self._by_model: dict[str, RequestLogger] = {}
        self._lock = threading.Lock()
        self._closed = False

    def update(self, specs: Mapping[str, LoggingSpec | None]) -> None:
        """Applies the models' logging configs; every file open so far is completed (a hot
        reload), loggers no model uses any more are closed.

        Raises:
            LoggingConfigError: A log folder cannot be written; nothing changes.
        """
        with self._lock:
            if self._closed:  # versions unloading at shutdown
                return
            wanted = {spec for spec in specs.values() if spec is not None}
            created = {}
            try:
                for spec in wanted - set(self._by_spec):
                    created[spec] = RequestLogger(
                        spec, self._limits, self._queue_records, self._count
                    )
            except LoggingConfigError:
                for new in created.values():
                    new.close()
                raise
            for spec, old in list(self._by_spec.items()):
                if spec in wanted:
                    old.rotate()
                else:
                    old.close()
                    del self._by_spec[spec]
            self._by_spec.update(created)
            self._by_model = {
                name: self._by_spec[spec] for name, spec in specs.items() if spec is not None
            }

    def close(self) -> None:
        """Writes every queued record and completes every file (at shutdown)."""
        with self._lock:
            self._closed = True
            for request_logger in self._by_spec.values():
                request_logger.close()
            self._by_spec.clear()
            self._by_model = {}

    def _sampled(self, name: str) -> RequestLogger | None:
        request_logger = self._by_model.get(name)
        if request_logger is None or not request_logger.sampled():
            return None
        return request_logger

    def predict(
        self,
        name: str,
        version: int,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        request: predict_pb2.PredictRequest | None = None,
    ) -> None:
        """Logs a Predict request (maybe): its inputs as sent and the outputs answered.

        ``request`` is the PredictRequest as received over gRPC: the record copies it instead of
        encoding ``inputs`` again (REST requests have no proto to copy).
        """
        request_logger = self._sampled(name)
        if request_logger is None:
            return

        def build() -> prediction_log_pb2.PredictionLog:
            log = prediction_log_pb2.PredictionLog()
            request_logger.metadata(log, name, version, signature_name)
            logged = log.predict_log.request
            if request is not None:
                logged.CopyFrom(request)
            else:
                for alias, array in inputs.items():
                    tensors.fill_tensor_proto(logged.inputs[alias], array)
                logged.output_filter.extend(output_filter)
            logged.model_spec.name = name
            logged.model_spec.signature_name = signature_name
            response = log.predict_log.response
            fill_model_spec(response.model_spec, name, version, signature_name)
            for alias, array in outputs.items():
                tensors.fill_tensor_proto(response.outputs[alias], array)
            return log

        request_logger.submit(name, build)

    def examples(
        self,
        api: str,
        name: str,
        version: int,
        signature_name: str,
        request_input: input_pb2.Input,
        result: classification_pb2.ClassificationResult | regression_pb2.RegressionResult,
    ) -> None:
        """Logs a Classify or Regress request (``api`` "classify" or "regress") with its result."""
        request_logger = self._sampled(name)
        if request_logger is None:
            return
        request_type, response_type, field = _EXAMPLES_APIS[api]

        def build() -> prediction_log_pb2.PredictionLog:
            log = prediction_log_pb2.PredictionLog()
            request_logger.metadata(log, name, version, signature_name)
            entry = getattr(log, field)
            entry.request.CopyFrom(request_type(input=request_input))
            entry.request.model_spec.name = name
            entry.request.model_spec.signature_name = signature_name
            entry.response.CopyFrom(response_type(result=result))
            fill_model_spec(entry.response.model_spec, name, version, signature_name)
            return log

        request_logger.submit(name, build)


_EXAMPLES_APIS = {
    "classify": (classification_pb2.ClassificationRequest,
                 classification_pb2.ClassificationResponse, "classify_log"),
    "regress": (regression_pb2.RegressionRequest, regression_pb2.RegressionResponse,
                "regress_log"),
}
