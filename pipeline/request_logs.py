"""Reads `skewless serve`'s request logs: TFRecord files of TF Serving's `PredictionLog` protos.

The file contract (the same as the server's writer): complete files are
`{filename_prefix}-{YYYYmmddTHHMMSSZ}-{pid}-{seq:05d}.tfrecord`, uncompressed, one record per
request; a file still being written ends in `.tfrecord.tmp` and is not read. Each record is a
`predict_log` (raw features as named tensors, `serving_default`), a `classify_log` or a
`regress_log` (tf.Examples), with `log_metadata.model_spec` and `timestamp_secs`.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import prediction_log_pb2

from skewless.transforms.task import BinaryTask, MulticlassTask, RegressionTask, Task

LOG_SUFFIX = ".tfrecord"
EXAMPLES_INPUT = "examples"  # serving_tf_example's one input: serialized tf.Examples
HEADER = 12  # uint64 length + uint32 masked CRC of the length
FOOTER = 4  # uint32 masked CRC of the data


class RequestLogError(ValueError):
    """The log folder cannot be monitored; the message is the one line a user sees."""


@dataclasses.dataclass(frozen=True)
class LoggedRequest:
    """The raw feature rows of one logged request, when it came, and what the server answered."""

    timestamp: int  # seconds since the epoch (log_metadata.timestamp_secs)
    model: str
    version: int | None
    rows: list[dict[str, Any]]
    predictions: list[Any] | None  # one served prediction per row, None when not logged


@dataclasses.dataclass(frozen=True)
class RequestLogs:
    """Everything read from a log folder: the requests of one model, and what was skipped."""

    requests: list[LoggedRequest]
    files: int
    corrupt: int  # records that could not be read or parsed; skipped
    unsupported: int  # records of another kind (multi_inference, session_run ...); skipped


def log_files(folder: Path) -> list[Path]:
    """The complete log files of a folder, oldest name first (`.tfrecord.tmp` files excluded)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(LOG_SUFFIX))


def _records(path: Path) -> Iterator[bytes | None]:
    """The records of a TFRecord file, with None for each one whose checksum does not hold.

    A damaged length ends the file (TFRecord has no sync marker to find the next record): it
    yields None once for the remainder.
    """
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        header = data[offset:offset + HEADER]
        if len(header) < HEADER:
            yield None
            return
        (length,) = struct.unpack("<Q", header[:8])
        (length_crc,) = struct.unpack("<I", header[8:])
        end = offset + HEADER + length + FOOTER
        if _masked_crc(header[:8]) != length_crc or end > len(data):
            yield None
            return
        record = data[offset + HEADER:end - FOOTER]
        (record_crc,) = struct.unpack("<I", data[end - FOOTER:end])
        yield record if _masked_crc(record) == record_crc else None
        offset = end


def _masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC32-C of some bytes."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _python_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.item() if isinstance(value, np.generic) else value


def _tensor_rows(inputs) -> list[dict[str, Any]]:
    """Rows of a Predict request's named tensors (one value per row; a [batch, 1] shape too)."""
    columns = {}
    for name, proto in inputs.items():
        array = tf.make_ndarray(proto)
        columns[name] = array.reshape(array.shape[0], -1)[:, 0] if array.ndim else array[None]
    sizes = {len(values) for values in columns.values()}
    if len(sizes) > 1:
        raise ValueError(f"inputs of different batch sizes {sorted(sizes)}")
    count = sizes.pop() if sizes else 0
    return [{name: _python_value(values[i]) for name, values in columns.items()}
            for i in range(count)]


def _example_row(example: tf.train.Example) -> dict[str, Any]:
    """A tf.Example's first value of each feature that has one."""
    row = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = getattr(feature, kind).value if kind else []
        if values:
            row[name] = _python_value(values[0])
    return row


def row_example(row: dict[str, Any]) -> tf.train.Example:
    """A row as a tf.Example: strings as bytes, floats as floats, integers as int64."""
    example = tf.train.Example()
    for name, value in row.items():
        feature = example.features.feature[name]
        if isinstance(value, str | bytes):
            feature.bytes_list.value.append(value if isinstance(value, bytes) else value.encode())
        elif isinstance(value, float):
            feature.float_list.value.append(value)
        else:
            feature.int64_list.value.append(value)
    return example


def _input_rows(model_input) -> list[dict[str, Any]]:
    """Rows of a Classify or Regress request's tf.Examples (a context is merged into each)."""
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        return [_example_row(e) for e in model_input.example_list.examples]
    if kind == "example_list_with_context":
        listed = model_input.example_list_with_context
        context = _example_row(listed.context)
        return [{**context, **_example_row(e)} for e in listed.examples]
    return []


def _predict_predictions(response, task: Task) -> list[Any] | None:
    key = "classes" if isinstance(task, MulticlassTask) else task.prediction_key
    if key not in response.outputs:
        return None
    array = tf.make_ndarray(response.outputs[key])
    return [_python_value(v) for v in array.reshape(array.shape[0], -1)[:, 0]]


def _classify_predictions(result, task: Task) -> list[Any] | None:
    predictions = []
    for classification in result.classifications:
        classes = list(classification.classes)
        if not classes:
            return None
        if isinstance(task, BinaryTask):
            predictions.append(classes[-1].score)  # the positive class comes last
        else:
            best = max(classes, key=lambda c: c.score)
            predictions.append(best.label)
    return predictions or None


def read_request(log: prediction_log_pb2.PredictionLog, task: Task) -> LoggedRequest | None:
    """One logged request as rows and served predictions; None for kinds that carry no rows."""
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        inputs = log.predict_log.request.inputs
        if set(inputs) == {EXAMPLES_INPUT} and (
                inputs[EXAMPLES_INPUT].dtype == tf.string.as_datatype_enum):
            rows = [_example_row(tf.train.Example.FromString(serialized))
                    for serialized in tf.make_ndarray(inputs[EXAMPLES_INPUT]).reshape(-1)]
        else:
            rows = _tensor_rows(inputs)
        predictions = _predict_predictions(log.predict_log.response, task)
    elif kind == "classify_log":
        rows = _input_rows(log.classify_log.request.input)
        predictions = _classify_predictions(log.classify_log.response.result, task)
    elif kind == "regress_log":
        rows = _input_rows(log.regress_log.request.input)
        regressions = log.regress_log.response.result.regressions
        predictions = ([r.value for r in regressions] if isinstance(task, RegressionTask)
                       and regressions else None)
    else:
        return None
    if predictions is not None and len(predictions) != len(rows):
        predictions = None  # a response that does not match its request is not trusted
    spec = log.log_metadata.model_spec
    version = spec.version.value if spec.HasField("version") else None
    return LoggedRequest(log.log_metadata.timestamp_secs, spec.name, version, rows, predictions)


def read_logs(folder: Path, model_name: str, task: Task) -> RequestLogs:
    """The logged requests of one model in a folder; unreadable records are skipped and counted.

    Raises:
        RequestLogError: no such folder, no complete log file or no readable request in it, or
            only requests of other models.
    """
    if not folder.is_dir():
        raise RequestLogError(f"no log folder {folder}")
    files = log_files(folder)
    if not files:
        raise RequestLogError(f"no request log files (*{LOG_SUFFIX}) in {folder}")
    requests, others = [], set()
    corrupt = unsupported = 0
    for path in files:
        for record in _records(path):
            try:
                if record is None:
                    raise DecodeError("bad checksum")
                request = read_request(prediction_log_pb2.PredictionLog.FromString(record), task)
            except (DecodeError, ValueError):
                corrupt += 1
                continue
            if request is None:
                unsupported += 1
            elif request.model != model_name:
                others.add(request.model)
            elif request.rows:
                requests.append(request)
    if not requests:
        if others:
            raise RequestLogError(
                f"the logs in {folder} are of model {', '.join(map(repr, sorted(others)))}, "
                f"not {model_name!r} (serving.model_name)")
        raise RequestLogError(f"no readable request in {len(files)} log file(s) in {folder} "
                              f"({corrupt} corrupt record(s))")
    return RequestLogs(requests, len(files), corrupt, unsupported)
