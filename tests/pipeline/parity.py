"""Skew parity, shared by the end-to-end tests of every task: the materialised Transform output
against the exported graph, the two predict signatures against each other, and the served model
over REST and gRPC against in-process predictions (rows with missing values included)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_serving.apis import (
    classification_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from skewless.pipeline import build
from skewless.pipeline.store import connect, latest_output
from skewless.transforms.signatures import MISSING_INT64
from skewless.transforms.task import REGRESSION_SIGNATURE


def raw_train_examples(config, n: int) -> list[bytes]:
    store = connect(config)
    examples = latest_output(store, config.pipeline.name, build.EXAMPLE_GEN, "Examples")
    files = tf.io.gfile.glob(f"{examples.uri}/Split-train/*")
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(n)]


def materialised_train(config) -> tuple[dict[str, np.ndarray], tft.TFTransformOutput]:
    store = connect(config)
    transformed = latest_output(store, config.pipeline.name, build.TRANSFORM, "Examples")
    graph = latest_output(store, config.pipeline.name, build.TRANSFORM, "TransformGraph")
    tft_output = tft.TFTransformOutput(graph.uri)
    files = tf.io.gfile.glob(f"{transformed.uri}/Split-train/*")
    records = list(tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator())
    parsed = tf.io.parse_example(records, tft_output.transformed_feature_spec())
    return {k: np.reshape(v.numpy(), [len(records)]) for k, v in parsed.items()}, tft_output


def rows_match(graph: dict[str, np.ndarray], stored: dict[str, np.ndarray]) -> np.ndarray:
    """For each graph-transformed row: is there a materialised row equal to it (floats 1e-6)?"""
    floats = [k for k, v in stored.items() if v.dtype.kind == "f"]
    ints = [k for k in stored if k not in floats]
    g_f = np.stack([graph[k] for k in floats], axis=1)[:, None, :]
    s_f = np.stack([stored[k] for k in floats], axis=1)[None, :, :]
    g_i = np.stack([graph[k] for k in ints], axis=1)[:, None, :]
    s_i = np.stack([stored[k] for k in ints], axis=1)[None, :, :]
    same = (np.abs(g_f - s_f).max(axis=2) <= 1e-6) & (g_i == s_i).all(axis=2)
    return same.any(axis=1)


def named_tensors(raw: list[bytes], signature) -> dict[str, tf.Tensor]:
    """What a JSON client sends: one tensor per raw feature; NaN / '' / MISSING_INT64 if absent."""
    _, specs = signature.structured_input_signature
    columns = {name: [] for name in specs}
    for record in raw:
        features = tf.train.Example.FromString(record).features.feature
        for name, spec in specs.items():
            kind = features[name].WhichOneof("kind") if name in features else None
            values = list(getattr(features[name], kind).value) if kind else []
            if values:
                columns[name].append(values[0])
            elif spec.dtype == tf.string:
                columns[name].append(b"")
            elif spec.dtype.is_integer:
                columns[name].append(MISSING_INT64)
            else:
                columns[name].append(float("nan"))
    return {name: tf.constant(values, specs[name].dtype) for name, values in columns.items()}


def rows(tensors: dict[str, tf.Tensor]) -> list[dict]:
    """The JSON rows a client sends for the same tensors (strings as text)."""
    columns = {
        name: [v.decode() if isinstance(v, bytes) else v for v in t.numpy().tolist()]
        for name, t in tensors.items()
    }
    size = len(next(iter(columns.values())))
    return [{name: values[i] for name, values in columns.items()} for i in range(size)]


def pushed_model(config):
    """The one pushed version of a config's model, loaded."""
    [version] = [p for p in config.model_push_dir.iterdir() if p.name.isdigit()]
    return tf.saved_model.load(str(version))


def assert_transform_parity(config, n: int, drift_feature: str) -> None:
    """Materialised Transform rows equal what the exported graph computes (1e-6), sharply."""
    raw = raw_train_examples(config, n)
    stored, _ = materialised_train(config)
    computed = pushed_model(config).signatures["transform_features"](examples=tf.constant(raw))
    graph = {k: np.reshape(v.numpy(), [len(raw)]) for k, v in computed.items() if k in stored}
    assert set(graph) == set(stored)
    assert rows_match(graph, stored).all()
    drifted = dict(graph, **{drift_feature: graph[drift_feature] + 1e-4})
    assert not rows_match(drifted, stored).any()


def assert_signatures_agree(config, n: int) -> dict[str, np.ndarray]:
    """serving_default on named tensors equals serving_tf_example on the same rows."""
    raw = raw_train_examples(config, n)
    model = pushed_model(config)
    by_example = model.signatures["serving_tf_example"](examples=tf.constant(raw))
    serving_default = model.signatures["serving_default"]
    by_features = serving_default(**named_tensors(raw, serving_default))
    assert set(by_features) == set(by_example)
    for name, value in by_example.items():
        if value.dtype.is_floating:
            np.testing.assert_allclose(by_features[name].numpy(), value.numpy(), atol=1e-6)
        else:
            assert (by_features[name].numpy() == value.numpy()).all(), name
    return {name: value.numpy() for name, value in by_example.items()}


@contextlib.contextmanager
def serving(config) -> Iterator:
    """`skewless serve`'s server on the config's push dir, on free loopback ports."""
    from skewless.serving.config import single_model_config
    from skewless.serving.server import ModelServer, ServerOptions

    server = ModelServer(ServerOptions(
        models=single_model_config(config.serving.model_name, str(config.model_push_dir)),
        port=0, rest_api_port=0,
    )).start()
    try:
        yield server
    finally:
        server.stop()


def assert_served_predictions_match(config, n: int) -> None:
    """REST Predict = gRPC Predict = in-process `serving_default`, every output, for n rows."""
    from skewless.serving.client import GrpcClient, RestClient

    raw = raw_train_examples(config, n)
    signature = pushed_model(config).signatures["serving_default"]
    tensors = named_tensors(raw, signature)
    expected = {k: v.numpy() for k, v in signature(**tensors).items()}
    name = config.serving.model_name
    with serving(config) as server:
        with RestClient(port=server.rest_port) as rest, GrpcClient(port=server.grpc_port) as rpc:
            answers = [rest.predict(name, rows(tensors)), rpc.predict(name, rows(tensors))]
    for answer in answers:
        assert set(answer) == set(expected)
        for key, value in expected.items():
            got = answer[key].reshape(value.shape)
            if value.dtype.kind == "f":
                assert_float32_close(got, value)
            else:
                assert _texts(got).tolist() == _texts(value).tolist(), key


def assert_float32_close(got: np.ndarray, want: np.ndarray, ulps: int = 8) -> None:
    """Equal as float32 results of differently batched computations are: within 1e-6, or within
    a few units in the last place (a regression value near 200 has a float32 ULP of 1.5e-5)."""
    want32 = np.asarray(want, np.float32)
    tolerance = 1e-6 + ulps * np.spacing(np.abs(want32)).astype(np.float64)
    difference = np.abs(np.asarray(got, np.float64) - want32.astype(np.float64))
    worst = np.unravel_index(np.argmax(difference - tolerance), difference.shape)
    assert (difference <= tolerance).all(), (
        f"{int((difference > tolerance).sum())} of {difference.size} values differ beyond "
        f"1e-6 or {ulps} float32 ULPs; e.g. {np.asarray(got)[worst]} against {want32[worst]}")


def _texts(array: np.ndarray) -> np.ndarray:
    """Strings as text, whether they came as bytes (TensorFlow) or str (a JSON client)."""
    if array.dtype.kind not in "OSU":
        return array
    flat = [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]
    return np.array(flat, dtype=object).reshape(array.shape)


def _json_example(record: bytes) -> dict:
    """A tf.Example as TF Serving's REST `examples` JSON: floats stay floats (2.0, not 2)."""
    out = {}
    for name, feature in tf.train.Example.FromString(record).features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        if values:
            value = values[0]
            out[name] = value.decode() if isinstance(value, bytes) else value
    return out


def classify_or_regress(config, n: int):
    """Classify (classifiers) or Regress (regressors) over REST and gRPC on n raw rows.

    Returns:
        (REST results, gRPC result proto, in-process outputs of the API signature)
    """
    task = config.task
    raw = raw_train_examples(config, n)
    expected = {k: v.numpy() for k, v in pushed_model(config).signatures[task.api_signature](
        inputs=tf.constant(raw)).items()}
    verb = "regress" if task.api_signature == REGRESSION_SIGNATURE else "classify"
    name = config.serving.model_name
    with serving(config) as server:
        from skewless.serving.client import RestClient

        with RestClient(port=server.rest_port) as rest:
            by_rest = rest.request("POST", f"/v1/models/{name}:{verb}", {
                "signature_name": task.api_signature,
                "examples": [_json_example(r) for r in raw],
            })["results"]
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            if verb == "regress":
                request = regression_pb2.RegressionRequest()
                call = stub.Regress
            else:
                request = classification_pb2.ClassificationRequest()
                call = stub.Classify
            request.model_spec.name = name
            request.model_spec.signature_name = task.api_signature
            for record in raw:
                request.input.example_list.examples.add().ParseFromString(record)
            by_grpc = call(request, timeout=30).result
    return by_rest, by_grpc, expected


def assert_batch_matches_rest(config, table) -> None:
    """`skewless predict-batch`'s output table = the served model's REST answers for its rows.

    A vector output (multiclass `scores`) is written as columns `<name>_0`, `<name>_1`, ...
    """
    from skewless.serving.client import RestClient
    from skewless.transforms.signatures import MISSING_INT64

    signature = pushed_model(config).signatures["serving_default"]
    _, specs = signature.structured_input_signature
    missing = {tf.string: "", tf.int64: MISSING_INT64}
    requests = [{name: (row[name] if row.get(name) is not None
                        else missing.get(spec.dtype, float("nan")))
                 for name, spec in specs.items()} for row in table.to_pylist()]
    with serving(config) as server, RestClient(port=server.rest_port) as rest:
        online = rest.predict(config.serving.model_name, requests)
    assert set(online) == set(signature.structured_outputs)
    for key, value in online.items():
        value = value.reshape(table.num_rows, -1)
        columns = [key] if key in table.column_names else [
            f"{key}_{i}" for i in range(value.shape[1])]
        batch = np.stack([table.column(c).to_numpy() for c in columns], 1)
        if value.dtype.kind == "f":
            assert_float32_close(batch, value)
        else:
            assert _texts(batch).tolist() == _texts(value).tolist(), key
