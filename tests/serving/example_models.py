"""Small SavedModels shaped like the pipeline's export, to try, test and benchmark the server.

:func:`export_taxi_model` writes a raw-feature model with the signatures the pipeline exports
(``serving_default`` on named raw features, ``serving_tf_example`` on serialized examples);
:func:`export_classifier_model` writes a TF1-style model with real Classify and Regress
signatures and a Predict signature whose ``scale`` input has a default value.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from skewless.serving import tensors
from skewless.serving.warmup import write_warmup_file

TAXI_FEATURES: dict[str, tf.DType] = {
    "trip_miles": tf.float32,
    "fare": tf.float32,
    "trip_start_hour": tf.int64,
    "payment_type": tf.string,
    "company": tf.string,
}


class _TaxiModule(tf.Module):
    def __init__(self, bias: float) -> None:
        super().__init__()
        self.weights = tf.Variable([0.35, -0.04, 0.07], dtype=tf.float32)
        self.bias = tf.Variable(bias, dtype=tf.float32)
        self.payment_weights = tf.Variable(
            np.linspace(-1.0, 1.0, 16, dtype=np.float32), dtype=tf.float32
        )

    def score(self, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        numeric = tf.stack(
            [
                features["trip_miles"],
                features["fare"],
                tf.cast(features["trip_start_hour"], tf.float32),
            ],
            axis=1,
        )
        payment = tf.gather(
            self.payment_weights, tf.strings.to_hash_bucket_fast(features["payment_type"], 16)
        )
        company = tf.cast(tf.strings.length(features["company"]), tf.float32) * 0.01
        logits = tf.linalg.matvec(numeric, self.weights) + payment + company + self.bias
        probabilities = tf.sigmoid(logits)
        return {
            "probabilities": probabilities,
            "classes": tf.cast(probabilities > 0.5, tf.int64),
        }


def export_taxi_model(path: str, bias: float = 0.0, warmup_rows: int = 0) -> str:
    """Writes a taxi-like raw-feature SavedModel (one version folder).

    Args:
        path: The version folder to create, e.g. ``<base>/taxi/1``.
        bias: Shifts every logit, so that versions give different answers.
        warmup_rows: When > 0, also writes a warm-up file with one Predict of that many rows.

    Returns:
        ``path``.
    """
    module = _TaxiModule(bias)
    raw_specs = [tf.TensorSpec([None], dtype, name) for name, dtype in TAXI_FEATURES.items()]

    @tf.function(input_signature=raw_specs)
    def serve_raw(trip_miles, fare, trip_start_hour, payment_type, company):
        return module.score(
            {
                "trip_miles": trip_miles,
                "fare": fare,
                "trip_start_hour": trip_start_hour,
                "payment_type": payment_type,
                "company": company,
            }
        )

    feature_spec = {
        name: tf.io.FixedLenFeature([], dtype, default_value=None)
        for name, dtype in TAXI_FEATURES.items()
    }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, "examples")])
    def serve_examples(examples):
        return module.score(tf.io.parse_example(examples, feature_spec))

    tf.saved_model.save(
        module,
        path,
        signatures={"serving_default": serve_raw, "serving_tf_example": serve_examples},
    )
    if warmup_rows:
        write_warmup_requests(path, [taxi_columns(taxi_rows(warmup_rows))])
    return path


def taxi_rows(count: int, seed: int = 0) -> list[dict]:
    """Deterministic raw feature rows for the taxi-like model, as JSON-ready dicts."""
    rng = np.random.default_rng(seed)
    payments = ["Cash", "Credit Card", "No Charge", "Dispute", "Mobile"]
    companies = ["Flash Cab", "Taxi Affiliation Services", "Sun Taxi", "", "Chicago Carriage"]
    return [
        {
            "trip_miles": round(float(rng.uniform(0, 30)), 3),
            "fare": round(float(rng.uniform(3, 80)), 2),
            "trip_start_hour": int(rng.integers(0, 24)),
            "payment_type": payments[int(rng.integers(0, len(payments)))],
            "company": companies[int(rng.integers(0, len(companies)))],
        }
        for _ in range(count)
    ]


def taxi_columns(rows: list[dict]) -> dict[str, np.ndarray]:
    """Rows of the taxi-like model as one numpy array per feature."""
    columns = {}
    for name, dtype in TAXI_FEATURES.items():
        values = [row[name] for row in rows]
        if dtype == tf.string:
            array = np.empty(len(values), dtype=object)
            array[:] = [v.encode() for v in values]
        else:
            array = np.asarray(values, dtype=dtype.as_numpy_dtype)
        columns[name] = array
    return columns


def write_warmup_requests(
    path: str, batches: list[dict[str, np.ndarray]], signature_name: str = "serving_default"
) -> str:
    """Writes ``assets.extra/tf_serving_warmup_requests`` with one Predict per batch.

    Returns:
        The warm-up file's path.
    """
    logs = []
    for batch in batches:
        request = predict_pb2.PredictRequest()
        request.model_spec.signature_name = signature_name
        for name, array in batch.items():
            request.inputs[name].CopyFrom(tensors.to_tensor_proto(array))
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return write_warmup_file(path, logs)


def export_classifier_model(path: str) -> str:
    """Writes a TF1-style SavedModel with classify, regress and defaulted predict signatures.

    Signatures (feature ``x``, a float in each tf.Example):
        ``serving_default`` / ``classify_x``: classes ``[["neg", "pos"]]`` with scores
        ``[sigmoid(-x), sigmoid(x)]``; ``regress_x``: ``2x + 1``;
        ``scaled`` (predict): ``y = a * scale`` where ``scale`` defaults to 2.

    Returns:
        ``path``.
    """
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        examples = v1.placeholder(tf.string, [None], name="tf_example")
        parsed = tf.io.parse_example(
            examples, {"x": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}
        )
        x = parsed["x"]
        scores = tf.concat([tf.sigmoid(-x), tf.sigmoid(x)], axis=1, name="scores")
        classes = tf.tile(tf.constant([["neg", "pos"]]), [tf.shape(x)[0], 1], name="classes")
        regression = tf.identity(2.0 * x + 1.0, name="regression")
        a = v1.placeholder(tf.float32, [None], name="a")
        scale = v1.placeholder_with_default(tf.constant(2.0), [], name="scale")
        scaled = tf.identity(a * scale, name="y")
        classify = v1.saved_model.classification_signature_def(examples, classes, scores)
        regress = v1.saved_model.regression_signature_def(examples, regression)
        predict = v1.saved_model.predict_signature_def({"a": a, "scale": scale}, {"y": scaled})
        predict.defaults["scale"].CopyFrom(tf.make_tensor_proto(2.0, tf.float32))
        with v1.Session(graph=graph) as session:
            builder = v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(
                session,
                [tf.saved_model.SERVING],
                signature_def_map={
                    "serving_default": classify,
                    "classify_x": classify,
                    "regress_x": regress,
                    "scaled": predict,
                },
            )
            builder.save()
    return path
