"""The tf.Transform preprocessing generated from the feature plan.

The same graph runs in the Transform component (analyse + materialise the training data) and inside
every serving signature of the exported model, so training and serving cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform import schema_inference

from skewless.transforms.features import WEIGHT_KEY, FeaturePlan, cross_name, transformed_name

# What a missing value becomes before a vocabulary is applied: it is a category of its own.
MISSING_STRING = "__missing__"  # TFT drops "" from vocabularies
MISSING_INT = -1


def dense(x: tf.Tensor | tf.SparseTensor, default: Any) -> tf.Tensor:
    """A [batch] tensor from a [batch] / [batch, 1] tensor or a [batch, <=1] SparseTensor."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(
            tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), default_value=default
        )
    if x.shape.rank == 2:
        x = tf.squeeze(x, axis=1)
    return x


def _int64(value: int) -> tf.Tensor:
    return tf.constant(value, tf.int64)


def _as_float(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor | tf.SparseTensor:
    if isinstance(x, tf.SparseTensor):
        return tf.SparseTensor(x.indices, tf.cast(x.values, tf.float32), x.dense_shape)
    return tf.cast(x, tf.float32)


def z_score(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """Z-score over the present values; a missing value becomes 0, the mean (mean imputation)."""
    return dense(tft.scale_to_z_score(_as_float(x)), 0.0)


def vocabulary_ids(x: tf.Tensor | tf.SparseTensor, name: str, top_k: int, oov: int) -> tf.Tensor:
    """Vocabulary ids with `oov` hashed buckets for unseen values; missing is its own category."""
    missing = MISSING_STRING if x.dtype == tf.string else tf.cast(MISSING_INT, x.dtype)
    return tft.compute_and_apply_vocabulary(
        dense(x, missing), top_k=top_k, num_oov_buckets=oov, vocab_filename=name
    )


def bucket_ids(x: tf.Tensor | tf.SparseTensor, buckets: int) -> tf.Tensor:
    """Quantile bucket ids 0..buckets-1 over the present values; missing is bucket `buckets`."""
    ids = dense(tft.bucketize(_as_float(x), buckets), tf.constant(buckets, tf.int64))
    schema_inference.set_tensor_schema_override(ids, _int64(0), _int64(buckets))
    return ids


def hashed_cross(ids: list[tf.Tensor], hash_buckets: int) -> tf.Tensor:
    """A feature cross of categorical ids, hashed into `hash_buckets` ids."""
    joined = tf.strings.reduce_join(
        tf.stack([tf.strings.as_string(i) for i in ids], axis=1), axis=1, separator="|"
    )
    crossed = tf.strings.to_hash_bucket_fast(joined, hash_buckets)
    schema_inference.set_tensor_schema_override(crossed, _int64(0), _int64(hash_buckets - 1))
    return crossed


def label(inputs: dict[str, Any], plan: FeaturePlan) -> tuple[tf.Tensor, tf.Tensor]:
    """The label as the task trains on it, and its weight (0.0 where the label is missing).

    A label column goes through the task; a derived label is binary, `numerator > greater_than *
    denominator`, with a missing amount counted as 0.
    """
    if plan.label_column is not None:
        return plan.task.label(inputs[plan.label_column])
    numerator = dense(_as_float(inputs[plan.label_numerator]), 0.0)
    denominator = dense(_as_float(inputs[plan.label_denominator]), 0.0)
    derived = tf.cast(numerator > plan.label_greater_than * denominator, tf.int64)
    return derived, tf.ones_like(numerator)


def transform(inputs: dict[str, Any], plan: FeaturePlan) -> dict[str, tf.Tensor]:
    """Transformed features (`<feature>_xf`), the label by its name, its weight by `WEIGHT_KEY`."""
    outputs: dict[str, tf.Tensor] = {}
    for name in plan.numeric:
        outputs[transformed_name(name)] = z_score(inputs[name])
    for name in plan.categorical:
        outputs[transformed_name(name)] = vocabulary_ids(
            inputs[name], name, plan.top_k, plan.oov_buckets
        )
    for name in plan.bucketized:
        outputs[transformed_name(name)] = bucket_ids(inputs[name], plan.buckets)
    for names, hash_buckets in plan.crosses:
        ids = [outputs[transformed_name(n)] for n in names]
        outputs[transformed_name(cross_name(names))] = hashed_cross(ids, hash_buckets)
    outputs[plan.label], outputs[WEIGHT_KEY] = label(inputs, plan)
    return outputs


def preprocessing_fn(inputs: dict[str, Any], custom_config: dict[str, Any]) -> dict[str, Any]:
    """The Transform component's entry point; the plan arrives as TFX `custom_config`."""
    return transform(inputs, FeaturePlan.from_custom_config(custom_config))
