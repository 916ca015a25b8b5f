"""The peer of the serving benchmark: a plain FastAPI + uvicorn app around ``serving_default``.

This is the "plain Python web server" that teams write first: load the SavedModel, and for each
request turn TF Serving's row-format JSON (``{"instances": [{...}, ...]}``) into tensors, call the
signature, answer ``{"predictions": [...]}``. No batching across requests. It answers the same
``POST /v1/models/<name>:predict`` as TF Serving, so the same load generator drives both.

    PEER_MODEL_DIR=artifacts/serving/taxi/<version> PEER_MODEL_NAME=taxi \\
        .venv/bin/uvicorn benchmarks.fastapi_peer:app --port 8601 --workers 2
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from fastapi import FastAPI, HTTPException, Request  # noqa: E402
from fastapi.responses import ORJSONResponse  # noqa: E402

MODEL_DIR = os.environ.get("PEER_MODEL_DIR", "")
MODEL_NAME = os.environ.get("PEER_MODEL_NAME", "taxi")

app = FastAPI(default_response_class=ORJSONResponse)
_signature = tf.saved_model.load(MODEL_DIR).signatures["serving_default"] if MODEL_DIR else None


def _inputs(instances: list[dict]) -> dict[str, tf.Tensor]:
    specs = _signature.structured_input_signature[1]
    feed = {}
    for name, spec in specs.items():
        values = [row[name] for row in instances]
        if spec.dtype == tf.string:
            values = [v.encode() if isinstance(v, str) else v for v in values]
            feed[name] = tf.constant(np.array(values, dtype=object), dtype=tf.string)
        else:
            feed[name] = tf.constant(values, dtype=spec.dtype)
    return feed


def _jsonable(array: np.ndarray) -> list:
    if array.dtype == object:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                for v in array.reshape(len(array), -1)[:, 0]]
    return array.tolist()


@app.post(f"/v1/models/{MODEL_NAME}:predict")
async def predict(request: Request) -> dict:
    body = await request.json()
    instances = body.get("instances") if isinstance(body, dict) else None
    if not isinstance(instances, list) or not instances:
        raise HTTPException(400, "expected {\"instances\": [...]}")
    try:
        outputs = _signature(**_inputs(instances))
    except (KeyError, ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
        raise HTTPException(400, str(error)[:500]) from None
    columns = {name: _jsonable(tensor.numpy()) for name, tensor in outputs.items()}
    predictions = [{name: values[i] for name, values in columns.items()}
                   for i in range(len(instances))]
    return {"predictions": predictions}
