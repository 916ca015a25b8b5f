"""Users' own model builders (`model.build_fn`), as the end-to-end and network tests use them."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

CUSTOM_LAYER = "custom_hidden"


def build(features, task, hyperparameters):
    """A small network unlike the built-in one: embeddings and one tanh layer, the task's head."""
    inputs = {name: keras.Input(shape=(1,), name=name, dtype=f.dtype)
              for name, f in features.items()}
    parts = [
        inputs[name] if f.categories is None
        else keras.layers.Flatten()(keras.layers.Embedding(f.categories, 3)(inputs[name]))
        for name, f in features.items()
    ]
    x = keras.layers.concatenate(parts) if len(parts) > 1 else parts[0]
    x = keras.layers.Dense(12, activation="tanh", name=CUSTOM_LAYER)(x)
    return task.compile(keras.Model(inputs, task.head(x)), hyperparameters.learning_rate)


def wrong_head(features, task, hyperparameters):
    """A model whose output ignores the task (two units whatever the task)."""
    inputs = {name: keras.Input(shape=(1,), name=name, dtype=f.dtype)
              for name, f in features.items()}
    x = keras.layers.concatenate(list(inputs.values()))
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    model.compile(optimizer="adam", loss="mse")
    return model


def uncompiled(features, task, hyperparameters):
    """A model the builder forgot to compile."""
    inputs = {name: keras.Input(shape=(1,), name=name, dtype=f.dtype)
              for name, f in features.items()}
    return keras.Model(inputs, task.head(keras.layers.concatenate(list(inputs.values()))))


def not_a_model(features, task, hyperparameters):
    return "a model"


def poisonable(features, task, hyperparameters):
    """A network whose own hyperparameter `poison` (declared below) makes every output NaN."""
    inputs = {name: keras.Input(shape=(1,), name=name, dtype=f.dtype)
              for name, f in features.items()}
    x = keras.layers.concatenate([tf.cast(i, tf.float32) for i in inputs.values()])
    x = keras.layers.Dense(hyperparameters.values.get("width", 4), activation="relu",
                           name=CUSTOM_LAYER)(x)
    if hyperparameters.values.get("poison"):
        x = keras.layers.Lambda(lambda t: t * float("nan"), name="poison")(x)
    return task.compile(keras.Model(inputs, task.head(x)), hyperparameters.learning_rate)


poisonable.search_space = {"poison": {"values": [0, 1]}, "width": {"values": [3]}}


def batch_statistics(features, task, hyperparameters):
    """A network that normalises with the statistics of the batch it is given, at inference too
    (batch normalisation left in training mode): it trains and evaluates in batches, but a
    single row is always normalised to zero, so served one row at a time every answer is the
    same."""
    inputs = {name: keras.Input(shape=(1,), name=name, dtype=f.dtype)
              for name, f in features.items()}
    x = keras.layers.concatenate([tf.cast(i, tf.float32) for i in inputs.values()])
    x = keras.layers.Dense(8, activation="relu", name=CUSTOM_LAYER)(x)
    x = keras.layers.BatchNormalization()(x, training=True)
    return task.compile(keras.Model(inputs, task.head(x)), hyperparameters.learning_rate)
