"""Model warm-up: replays ``assets.extra/tf_serving_warmup_requests`` before a version serves.

The file is a TFRecord of ``PredictionLog`` protos, as TF Serving reads it; each logged Predict,
Classify or Regress request is run once on the freshly loaded version.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

from tensorflow_serving.apis import prediction_log_pb2

from skewless.serving import inference, tensors
from skewless.serving.servable import LoadedModel

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
