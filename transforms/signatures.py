"""The serving signatures of the exported model, each with the tf.Transform graph inside.

- `serving_default`: raw features as named tensors, one per raw feature, batch first. Features
  that may be missing (variable-length in the schema) may be omitted from a request: the
  signature's defaults mark them missing, as TF Serving applies SignatureDef defaults. Per row, a
  missing value is NaN for floats, "" for strings and `MISSING_INT64` for integers.
- `serving_tf_example`: serialized tf.Examples (`examples`), for clients that already build them.
- `classification` (classifiers) or `regression` (regressors): serialized tf.Examples as TF
  Serving's Classify and Regress APIs send them (`inputs`), with the method name those APIs check.
- `transform_features`: serialized tf.Examples to transformed features, for TFMA.
"""

from __future__ import annotations

import inspect
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.saved_model import fingerprinting_utils
from tensorflow_metadata.proto.v0 import schema_pb2

from skewless.transforms.features import FeaturePlan
from skewless.transforms.task import API_INPUTS

MISSING_INT64 = -(2**63)
# The raw data schema inside the exported model, as TFX's InfraValidator keeps its requests:
# batch inference validates new data against the schema of the model that scores it.
SCHEMA_FILE = "assets.extra/schema.pbtxt"
TRAINING, SERVING = "TRAINING", "SERVING"
SERVING_DEFAULT = "serving_default"
SERVING_TF_EXAMPLE = "serving_tf_example"
TRANSFORM_FEATURES = "transform_features"


def _missing_value(dtype: tf.DType) -> tf.Tensor:
    if dtype == tf.string:
        return tf.constant("", tf.string)
    if dtype.is_integer:
        return tf.constant(MISSING_INT64, dtype)
    return tf.constant(float("nan"), dtype)


def _present(x: tf.Tensor) -> tf.Tensor:
    if x.dtype == tf.string:
        return tf.not_equal(x, "")
    if x.dtype.is_integer:
        return tf.not_equal(x, MISSING_INT64)
    return tf.logical_not(tf.math.is_nan(x))


def raw_features_from_tensors(
    tensors: dict[str, tf.Tensor], raw_spec: dict[str, Any]
) -> dict[str, tf.Tensor | tf.SparseTensor]:
    """What `tf.io.parse_example` would give for the same rows: the TFT layer's raw input.

    Optional (VarLen) features become [batch, 1] SparseTensors holding only the present values, so
    that a missing value is treated exactly as an absent feature in a tf.Example.
    """
    batch = tf.reduce_max(tf.stack([tf.shape(t)[0] for t in tensors.values()]))
    features = {}
    for name, value in tensors.items():
        spec = raw_spec[name]
        if isinstance(spec, tf.io.FixedLenFeature):
            features[name] = tf.reshape(value, [-1, *spec.shape])
            continue
        value = tf.broadcast_to(value, [batch])
        present = _present(value)
        indices = tf.where(present)
        features[name] = tf.SparseTensor(
            indices=tf.concat([indices, tf.zeros_like(indices)], axis=1),
            values=tf.boolean_mask(value, present),
            dense_shape=tf.stack([tf.cast(batch, tf.int64), tf.constant(1, tf.int64)]),
        )
    return features


def serving_raw_spec(tft_output: tft.TFTransformOutput, plan: FeaturePlan) -> dict[str, Any]:
    """The raw feature spec of the features a client sends (the label's sources excluded)."""
    raw_spec = tft_output.raw_feature_spec()
    missing = [n for n in plan.raw_features if n not in raw_spec]
    if missing:
        raise ValueError(f"features not in the raw schema: {', '.join(missing)}")
    return {name: raw_spec[name] for name in plan.raw_features}


def make_signatures(
    model: keras.Model, tft_output: tft.TFTransformOutput, plan: FeaturePlan
) -> dict[str, tf.types.experimental.GenericFunction]:
    """The four serving signatures, each with the tf.Transform graph inside."""
    model.tft_layer = tft_output.transform_features_layer()
    task = plan.task
    spec = serving_raw_spec(tft_output, plan)
    full_spec = tft_output.raw_feature_spec()
    required = [n for n in plan.raw_features if isinstance(spec[n], tf.io.FixedLenFeature)]
    optional = [n for n in plan.raw_features if n not in required]
    order = required + optional
    # Python defaults on the function are what TF records as SignatureDef defaults.
    defaults = {n: tf.reshape(_missing_value(spec[n].dtype), [1]) for n in optional}
    parameters = inspect.Signature(
        [
            inspect.Parameter(
                n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults.get(n, inspect._empty)
            )
            for n in order
        ]
    )

    def serve_raw_features(*args, **kwargs):
        bound = parameters.bind(*args, **kwargs)
        bound.apply_defaults()
        raw = raw_features_from_tensors(dict(bound.arguments), spec)
        return task.serving_outputs(model(model.tft_layer(raw)))

    serve_raw_features.__signature__ = parameters
    raw_signature = tf.function(
        serve_raw_features,
        input_signature=[tf.TensorSpec([None], spec[n].dtype, name=n) for n in order],
        autograph=False,
    )

    def predict_examples(examples):
        return model(model.tft_layer(tf.io.parse_example(examples, spec)))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples(examples):
        return task.serving_outputs(predict_examples(examples))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=API_INPUTS)])
    def serve_api(inputs):
        return task.api_outputs(predict_examples(inputs))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform_features(examples):
        return model.tft_layer(tf.io.parse_example(examples, full_spec))

    return {
        SERVING_DEFAULT: raw_signature,
        SERVING_TF_EXAMPLE: serve_tf_examples,
        task.api_signature: serve_api,
        TRANSFORM_FEATURES: transform_features,
    }


def set_method_names(export_dir: str, method_names: dict[str, str]) -> None:
    """Sets SignatureDef method names, which TF2's `tf.saved_model.save` always writes as predict.

    TF Serving's Classify and Regress refuse a signature whose method name is not theirs. The
    fingerprint is rewritten to match the changed graph.
    """
    path = f"{export_dir.rstrip('/')}/saved_model.pb"
    with tf.io.gfile.GFile(path, "rb") as f:
        proto = saved_model_pb2.SavedModel.FromString(f.read())
    for meta_graph in proto.meta_graphs:
        for name, method in method_names.items():
            meta_graph.signature_def[name].method_name = method
    staging = path + ".tmp"  # on any tf.io.gfile filesystem (the cluster's may be gs://)
    with tf.io.gfile.GFile(staging, "wb") as f:
        f.write(proto.SerializeToString(deterministic=True))
    tf.io.gfile.rename(staging, path, overwrite=True)
    fingerprinting_utils.write_fingerprint(export_dir)


def export(model: keras.Model, tft_output: tft.TFTransformOutput, plan: FeaturePlan,
           export_dir: str) -> None:
    """Saves the model with every signature, the Classify/Regress one under its method name."""
    tf.saved_model.save(model, export_dir, signatures=make_signatures(model, tft_output, plan))
    set_method_names(export_dir, {plan.task.api_signature: plan.task.api_method})
    schema = serving_environments(tft_output.raw_metadata.schema, plan)
    path = f"{export_dir.rstrip('/')}/{SCHEMA_FILE}"
    tf.io.gfile.makedirs(path.rpartition("/")[0])
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text_format.MessageToString(schema))


def serving_environments(raw_schema: schema_pb2.Schema, plan: FeaturePlan) -> schema_pb2.Schema:
    """The raw schema with TFDV environments: columns only the label needs are not in SERVING."""
    schema = schema_pb2.Schema()
    schema.CopyFrom(raw_schema)
    del schema.default_environment[:]
    schema.default_environment.extend([TRAINING, SERVING])
    training_only = set(plan.label_sources).difference(plan.raw_features)  # taxi's fare is both
    for feature in schema.feature:
        if feature.name in training_only and SERVING not in feature.not_in_environment:
            feature.not_in_environment.append(SERVING)
    return schema
