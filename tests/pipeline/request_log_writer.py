"""A small writer of request logs in `skewless serve`'s file contract, for the monitor's tests.

Uncompressed TFRecord files of `tensorflow.serving.PredictionLog`, one record per request, named
`{filename_prefix}-{YYYYmmddTHHMMSSZ}-{pid}-{seq:05d}.tfrecord` (written as `.tfrecord.tmp`,
then renamed), with `log_metadata.model_spec` and `timestamp_secs`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, prediction_log_pb2

from skewless.pipeline.request_logs import row_example


def tensor(values: Sequence[Any]) -> tf.compat.v1.TensorProto:
    if isinstance(values[0], str):
        return tf.make_tensor_proto([v.encode() for v in values], dtype=tf.string)
    dtype = tf.float32 if isinstance(values[0], float) else tf.int64
    return tf.make_tensor_proto(np.asarray(values), dtype=dtype)


def predict_log(model: str, version: int, rows: list[dict[str, Any]], timestamp: int,
                probabilities: Sequence[float] | None = None) -> prediction_log_pb2.PredictionLog:
    """A logged Predict request of raw features (and its response, when given)."""
    log = prediction_log_pb2.PredictionLog()
    log.log_metadata.model_spec.name = model
    log.log_metadata.model_spec.version.value = version
    log.log_metadata.model_spec.signature_name = "serving_default"
    log.log_metadata.timestamp_secs = timestamp
    request = log.predict_log.request
    request.model_spec.CopyFrom(log.log_metadata.model_spec)
    for name in rows[0]:
        request.inputs[name].CopyFrom(tensor([row[name] for row in rows]))
    if probabilities is not None:
        log.predict_log.response.outputs["probabilities"].CopyFrom(
            tensor([float(p) for p in probabilities]))
    return log


def classify_log(model: str, version: int, rows: list[dict[str, Any]], timestamp: int,
                 results: Sequence[Sequence[tuple[str, float]]] | None = None
                 ) -> prediction_log_pb2.PredictionLog:
    """A logged Classify request of tf.Examples (and its response's (class, score) pairs)."""
    log = prediction_log_pb2.PredictionLog()
    log.log_metadata.model_spec.name = model
    log.log_metadata.model_spec.version.value = version
    log.log_metadata.model_spec.signature_name = "classification"
    log.log_metadata.timestamp_secs = timestamp
    request = classification_pb2.ClassificationRequest()
    request.input.example_list.examples.extend(row_example(row) for row in rows)
    log.classify_log.request.CopyFrom(request)
    for pairs in results or ():
        classification = log.classify_log.response.result.classifications.add()
        for label, score in pairs:
            classification.classes.add(label=label, score=score)
    return log


def write_logs(folder: Path, logs: Sequence[prediction_log_pb2.PredictionLog],
               prefix: str = "requests", seq: int = 0) -> Path:
    """One complete log file of the records; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = folder / f"{prefix}-{stamp}-{os.getpid()}-{seq:05d}.tfrecord"
    with tf.io.TFRecordWriter(str(path) + ".tmp") as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    os.rename(str(path) + ".tmp", path)
    return path

