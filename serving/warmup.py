"""Model warm-up: replays ``assets.extra/tf_serving_warmup_requests`` before a version serves.

The file is a TFRecord of ``PredictionLog`` protos, as TF Serving reads it; each logged Predict,
Classify or Regress request is run once on the freshly loaded version.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from skewless.serving import inference, tensors
from skewless.serving.client import rows_to_arrays
from skewless.serving.servable import LoadedModel, Signature

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit on the number of warm-up records.


class WarmupError(RuntimeError):
    """The warm-up file is malformed or one of its requests failed."""


def read_tfrecords(path: str) -> Iterator[bytes]:
    """Yields the records of a TFRecord file (length-prefixed; CRCs are not checked).

    Raises:
        WarmupError: The file ends inside a record.
    """
    with open(path, "rb") as handle:
        while True:
            header = handle.read(12)
            if not header:
                return
            if len(header) < 12:
                raise WarmupError(f"{path}: truncated record header")
            (length,) = struct.unpack("<Q", header[:8])
            data = handle.read(length)
            if len(data) < length or len(handle.read(4)) < 4:
                raise WarmupError(f"{path}: truncated record")
            yield data


def warm_up(model: LoadedModel) -> int:
    """Replays the version's warm-up requests, if it has any.

    Args:
        model: The freshly loaded version.

    Returns:
        How many requests were replayed.

    Raises:
        WarmupError: The file is malformed, too long, or a request failed.
    """
    path = os.path.join(model.path, WARMUP_FILE)
    if not os.path.isfile(path):
        return 0
    count = 0
    for record in read_tfrecords(path):
        count += 1
        if count > MAX_WARMUP_RECORDS:
            raise WarmupError(f"{path}: more than {MAX_WARMUP_RECORDS} warm-up records")
        log = prediction_log_pb2.PredictionLog()
        try:
            log.ParseFromString(record)
        except Exception as error:  # noqa: BLE001 - protobuf raises DecodeError subclasses
            raise WarmupError(f"{path}: record {count} is not a PredictionLog: {error}") from None
        try:
            _replay(model, log)
        except Exception as error:  # noqa: BLE001 - any failure fails the load
            raise WarmupError(f"{path}: warm-up request {count} failed: {error}") from None
    return count


def _replay(model: LoadedModel, log: prediction_log_pb2.PredictionLog) -> None:
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        request = log.predict_log.request
        signature = inference.predict_signature(model, request.model_spec.signature_name)
        inputs = {a: tensors.to_ndarray(p, a) for a, p in request.inputs.items()}
        plan = inference.plan_predict(model, signature, inputs, list(request.output_filter))
    elif kind == "classify_log":
        request = log.classify_log.request
        plan = inference.plan_classify(model, request.model_spec.signature_name, request.input)
    elif kind == "regress_log":
        request = log.regress_log.request
        plan = inference.plan_regress(model, request.model_spec.signature_name, request.input)
    else:
        raise WarmupError(f"unsupported warm-up log type: {kind}")
    plan.run()


def predict_logs(
    model_name: str, signature: Signature, rows: Sequence[Mapping[str, Any]]
) -> list[prediction_log_pb2.PredictionLog]:
    """One logged Predict request per row, in the signature's dtypes, as TFX's InfraValidator
    logs the requests it sent (`request_builder.py`: one example per request)."""
    dtypes = {alias: spec.dtype for alias, spec in signature.inputs.items()}
    logs = []
    for row in rows:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature.name
        for name, array in rows_to_arrays([row], dtypes).items():
            request.inputs[name].CopyFrom(tensors.to_tensor_proto(array))
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_warmup_file(model_dir: str, logs: Sequence[prediction_log_pb2.PredictionLog]) -> str:
    """Writes ``assets.extra/tf_serving_warmup_requests`` into a SavedModel folder, a TFRecord of
    PredictionLogs as TF Serving's ``saved_model_warmup`` reads it; returns its path.

    Raises:
        WarmupError: More records than TF Serving replays.
    """
    import tensorflow as tf

    if len(logs) > MAX_WARMUP_RECORDS:
        raise WarmupError(f"{len(logs)} warm-up records; TF Serving reads at most "
                          f"{MAX_WARMUP_RECORDS}")
    path = os.path.join(model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path
