"""The model: the built-in wide & deep network, or a user's own `build_fn`, with the task's head.

A `build_fn` (config `model.build_fn: package.module.function`) is called as
`build_fn(features, task, hyperparameters)` and returns a compiled tf_keras model that takes the
transformed features as a dict of named [batch, 1] inputs and ends in `task.head(x)`:

    def build(features, task, hyperparameters):
        inputs = {name: keras.Input(shape=(1,), name=name, dtype=f.dtype)
                  for name, f in features.items()}
        x = keras.layers.concatenate([tf.cast(i, tf.float32) for i in inputs.values()])
        x = keras.layers.Dense(16, activation="relu")(x)
        return task.compile(keras.Model(inputs, task.head(x)), hyperparameters.learning_rate)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf
import tf_keras as keras
from tensorflow_metadata.proto.v0 import schema_pb2

from skewless.transforms.features import WEIGHT_KEY, FeaturePlan, import_callable
from skewless.transforms.task import Task


def _leave_tf_keras_to_tf_function() -> None:
    """Keeps AutoGraph from rewriting tf_keras' own code, as TensorFlow already does for `keras`.

    TensorFlow's AutoGraph skips the modules in its conversion rules ("tensorflow", "keras", ...)
    but not "tf_keras", Keras 2 under its new name: every Keras layer, loss, metric and optimizer
    function was parsed and rewritten when `fit` traced its train step, 35 of the Trainer's 40 s
    on 50 steps (py-spy). Keras' code is written for tf.function without conversion; a
    `build_fn`'s own code is still converted.
    """
    from tensorflow.python.autograph.core import config as autograph_config

    rules = autograph_config.CONVERSION_RULES
    if not any(isinstance(r, autograph_config.DoNotConvert) and r.matches("tf_keras")
               for r in rules):
        autograph_config.CONVERSION_RULES = (autograph_config.DoNotConvert("tf_keras"), *rules)


_leave_tf_keras_to_tf_function()


@dataclasses.dataclass(frozen=True)
class TransformedFeature:
    """A model input: float32 (a scaled number) or int64 ids below `categories`."""

    dtype: tf.DType
    categories: int | None = None


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """What the built-in network takes from `model.*`; a build_fn may use any of it."""

    hidden_units: tuple[int, ...]
    embedding_dim: int
    learning_rate: float
    # Every tuned value by name (the Tuner's best, or a trial's), for a build_fn's own.
    values: Mapping[str, Any] = dataclasses.field(default_factory=dict)


BuildFn = Callable[[dict[str, TransformedFeature], Task, Hyperparameters], keras.Model]


def model_inputs(schema: schema_pb2.Schema, label: str) -> dict[str, TransformedFeature]:
    """The transformed features a model takes (not the label or its weight), sorted by name.

    Raises:
        ValueError: an integer feature has no int_domain, or a feature is neither float nor int.
    """
    features = {}
    for feature in sorted(schema.feature, key=lambda f: f.name):
        if feature.name in (label, WEIGHT_KEY):
            continue
        if feature.type == schema_pb2.FLOAT:
            features[feature.name] = TransformedFeature(tf.float32)
        elif feature.type == schema_pb2.INT:
            if not feature.HasField("int_domain"):
                raise ValueError(
                    f"transformed integer feature {feature.name!r} has no int_domain, so its "
                    "number of categories is unknown; annotate it (tft.compute_and_apply_vocabulary"
                    " does)"
                )
            features[feature.name] = TransformedFeature(tf.int64, int(feature.int_domain.max) + 1)
        else:
            raise ValueError(f"transformed feature {feature.name!r} is neither float nor int")
    return features


def wide_and_deep(
    features: dict[str, TransformedFeature], task: Task, hyperparameters: Hyperparameters
) -> keras.Model:
    """The built-in network: numbers feed the deep part; categories are one-hot in the wide
    part and embedded in the deep part; the two add up before the task's head."""
    inputs, wide, deep = {}, [], []
    for name, feature in features.items():
        inputs[name] = keras.Input(shape=(1,), name=name, dtype=feature.dtype)
        if feature.categories is None:
            deep.append(inputs[name])
            continue
        size = feature.categories
        wide.append(keras.layers.CategoryEncoding(num_tokens=size, output_mode="one_hot")(
            inputs[name]))
        embedded = keras.layers.Embedding(size, hyperparameters.embedding_dim)(inputs[name])
        deep.append(keras.layers.Flatten()(embedded))
    x = keras.layers.concatenate(deep) if len(deep) > 1 else deep[0]
    for units in hyperparameters.hidden_units:
        x = keras.layers.Dense(units, activation="relu")(x)
    if wide:
        wide_x = keras.layers.concatenate(wide) if len(wide) > 1 else wide[0]
        x = keras.layers.concatenate([x, wide_x])
    return task.compile(keras.Model(inputs=inputs, outputs=task.head(x)),
                        hyperparameters.learning_rate)


def resolve_build_fn(path: str | None) -> BuildFn:
    """The model builder an import path names, or the built-in wide & deep network.

    Raises:
        ValueError: the path is not `package.module.function`, or names nothing callable.
        ImportError: the module does not import.
    """
    return wide_and_deep if path is None else import_callable(path)


def tuned_hyperparameters(
    plan: FeaturePlan, values: Mapping[str, Any] | None
) -> tuple[Hyperparameters, int]:
    """The hyperparameters and batch size of the plan with tuned values in place of its own.

    `layers` and `units_<i>` (the width of hidden layer i) replace `hidden_units`; a layer with
    no tuned width keeps the plan's (its last layer's for layers beyond the plan's).
    """
    values = dict(values or {})
    widths = plan.hidden_units or (1,)
    layers = int(values.get("layers", len(plan.hidden_units)))
    hidden_units = tuple(int(values.get(f"units_{i}", widths[min(i, len(widths) - 1)]))
                         for i in range(layers))
    hyperparameters = Hyperparameters(
        hidden_units=hidden_units,
        embedding_dim=int(values.get("embedding_dim", plan.embedding_dim)),
        learning_rate=float(values.get("learning_rate", plan.learning_rate)),
        values=values,
    )
    return hyperparameters, int(values.get("batch_size", plan.batch_size))


def build_model(
    schema: schema_pb2.Schema, plan: FeaturePlan, hyperparameters: Hyperparameters | None = None
) -> keras.Model:
    """The plan's model (built-in or build_fn) over the transformed features, checked.

    Args:
        schema: the transformed schema.
        plan: the feature plan.
        hyperparameters: tuned ones (see `tuned_hyperparameters`); default the plan's.

    Raises:
        ValueError: the model is not compiled, or its output does not fit the task.
    """
    build = resolve_build_fn(plan.build_fn)
    hyperparameters = hyperparameters or tuned_hyperparameters(plan, None)[0]
    model = build(model_inputs(schema, plan.label), plan.task, hyperparameters)
    where = plan.build_fn or "the built-in model"
    if not isinstance(model, keras.Model):
        raise ValueError(f"{where} returned {type(model).__name__}, not a tf_keras Model")
    if model.optimizer is None or model.loss is None:
        raise ValueError(f"{where} returned a model that is not compiled (use task.compile)")
    try:
        plan.task.check_model(model)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    return model
