"""The Trainer component's entry point: datasets, training, history and export."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx_bsl.tfxio import dataset_options

from skewless.transforms.features import WEIGHT_KEY, FeaturePlan
from skewless.transforms.network import build_model, tuned_hyperparameters
from skewless.transforms.signatures import export
from skewless.transforms.task import RegressionTask

HISTORY_FILE = "history.json"
# Batches read to measure a regression label's mean and spread before training.
LABEL_SCALE_BATCHES = 50


def _with_weights(features: dict[str, tf.Tensor], label: tf.Tensor):
    """(features, label, weight): rows without a label weigh nothing in loss and metrics."""
    features = dict(features)
    weight = features.pop(WEIGHT_KEY, None)
    if weight is None:  # a user's preprocessing_fn that outputs no weight
        weight = tf.ones_like(tf.cast(label, tf.float32))
    return features, label, weight


def dataset(files, data_accessor, tft_output, plan: FeaturePlan,
            shuffle: bool = True) -> tf.data.Dataset:
    """Batches of (transformed features, label, weight), repeated; shuffled with the plan's seed
    unless `shuffle` is off (Keras opens a new iterator on the validation data every epoch, and
    each shuffled one first fills a 10,000-example buffer)."""
    options = dataset_options.TensorFlowDatasetOptions(
        batch_size=plan.batch_size, label_key=plan.label, shuffle=shuffle, shuffle_seed=plan.seed
    )
    batches = data_accessor.tf_dataset_factory(
        files, options, tft_output.transformed_metadata.schema
    )
    return batches.map(_with_weights).repeat()


def label_scale(batches: tf.data.Dataset) -> tuple[float, float]:
    """The mean and standard deviation of the labelled rows' labels in the first batches."""
    labels, weights = [], []
    for _, label, weight in batches.take(LABEL_SCALE_BATCHES):
        labels.append(np.reshape(label.numpy(), -1))
        weights.append(np.reshape(weight.numpy(), -1))
    values = np.concatenate(labels)[np.concatenate(weights) > 0]
    if values.size == 0:
        raise ValueError("no training row has a label")
    return float(values.mean()), float(values.std()) or 1.0


def train_and_eval_datasets(plan: FeaturePlan, fn_args: Any, tft_output) -> tuple:
    """The training and eval datasets of a Trainer's or Tuner's fn_args, batched by the plan;
    the eval batches in file order."""
    return (dataset(fn_args.train_files, fn_args.data_accessor, tft_output, plan),
            dataset(fn_args.eval_files, fn_args.data_accessor, tft_output, plan, shuffle=False))


def prepare_plan(plan: FeaturePlan, fn_args: Any, tft_output) -> FeaturePlan:
    """The plan with what only the training data tells: a regression label's mean and spread."""
    if not isinstance(plan.task, RegressionTask):
        return plan
    mean, std = label_scale(train_and_eval_datasets(plan, fn_args, tft_output)[0])
    return dataclasses.replace(
        plan, task=dataclasses.replace(plan.task, label_mean=mean, label_std=std))


def run_fn(fn_args: Any) -> None:
    """Trains for exactly `train_steps` steps, then exports with every signature.

    With a Tuner (or imported hyperparameters) upstream, its best values replace the plan's.
    The training history (loss and the task's metrics per epoch, train and eval) is written as
    JSON to `<model_run_dir>/history.json`.
    """
    plan = FeaturePlan.from_custom_config(fn_args.custom_config)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    keras.utils.set_random_seed(plan.seed)
    plan = prepare_plan(plan, fn_args, tft_output)
    tuned = (fn_args.hyperparameters or {}).get("values")
    hyperparameters, batch_size = tuned_hyperparameters(plan, tuned)
    plan = dataclasses.replace(plan, batch_size=batch_size)
    train, evaluation = train_and_eval_datasets(plan, fn_args, tft_output)
    model = build_model(tft_output.transformed_metadata.schema, plan, hyperparameters)
    # Up to 10 epochs for the history, of equal length, adding up to exactly train_steps.
    epochs = max(d for d in range(1, 11) if fn_args.train_steps % d == 0)
    history = model.fit(
        train,
        epochs=epochs,
        steps_per_epoch=fn_args.train_steps // epochs,
        validation_data=evaluation,
        validation_steps=max(1, fn_args.eval_steps),
        verbose=0,
    )
    tf.io.gfile.makedirs(fn_args.model_run_dir)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, HISTORY_FILE), "w") as f:
        json.dump({k: [float(v) for v in vs] for k, vs in history.history.items()}, f)
    export(model, tft_output, plan, fn_args.serving_model_dir)
