"""Each task's label, head and outputs on tiny in-memory tensors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from skewless.transforms.task import (
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    BinaryTask,
    MulticlassTask,
    RegressionTask,
    task_from_dict,
)


def _sparse(values, present, dtype):
    """A [batch, 1] SparseTensor holding `values` at the rows where `present` is true."""
    rows = [i for i, p in enumerate(present) if p]
    return tf.SparseTensor(
        indices=[[i, 0] for i in rows] or np.zeros((0, 2), np.int64),
        values=tf.constant([values[i] for i in rows], dtype),
        dense_shape=[len(present), 1],
    )


def test_binary_label_from_a_0_1_column_with_missing_values():
    label, weight = BinaryTask().label(_sparse([1, 0, 0, 1], [True, True, False, True], tf.int64))
    assert label.numpy().tolist() == [1, 0, 0, 1]
    assert weight.numpy().tolist() == [1.0, 1.0, 0.0, 1.0]


def test_binary_label_from_a_named_positive_value():
    task = BinaryTask(positive="yes", negative="no")
    label, weight = task.label(tf.constant([[b"yes"], [b"no"], [b"yes"]]))
    assert label.numpy().tolist() == [1, 0, 1] and weight.numpy().tolist() == [1.0, 1.0, 1.0]
    numeric = BinaryTask(positive="2").label(tf.constant([[1], [2]], tf.int64))[0]
    assert numeric.numpy().tolist() == [0, 1]


def test_multiclass_label_maps_names_and_integers_to_class_ids():
    task = MulticlassTask(classes=("setosa", "versicolor", "virginica"))
    label, weight = task.label(
        _sparse([b"virginica", b"setosa", b"", b"rosa"], [True, True, False, True], tf.string))
    assert label.numpy().tolist()[:2] == [2, 0]
    assert weight.numpy().tolist() == [1.0, 1.0, 0.0, 0.0]  # missing, and a class not listed
    ids = MulticlassTask(classes=("1", "2", "10")).label(tf.constant([10, 1, 2], tf.int64))[0]
    assert ids.numpy().tolist() == [2, 0, 1]


def test_regression_label_is_the_number_and_missing_weighs_nothing():
    label, weight = RegressionTask().label(_sparse([151.0, 0.0, 75.0], [True, False, True],
                                                   tf.float32))
    assert label.numpy().tolist() == [151.0, 0.0, 75.0]
    assert weight.numpy().tolist() == [1.0, 0.0, 1.0]


def test_outputs_per_task():
    p = tf.constant([[0.9], [0.2]])
    binary = BinaryTask(positive="yes", negative="no")
    assert binary.serving_outputs(p)["classes"].numpy().tolist() == [1, 0]
    api = binary.api_outputs(p)
    assert api["classes"].numpy().tolist() == [[b"no", b"yes"]] * 2
    np.testing.assert_allclose(api["scores"].numpy(), [[0.1, 0.9], [0.8, 0.2]], atol=1e-6)
    assert binary.api_method == CLASSIFY_METHOD

    multiclass = MulticlassTask(classes=("a", "b", "c"))
    scores = tf.constant([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])
    outputs = multiclass.serving_outputs(scores)
    assert outputs["classes"].numpy().tolist() == [b"b", b"a"]
    assert outputs["class_ids"].numpy().tolist() == [1, 0]
    assert multiclass.api_outputs(scores)["classes"].shape == (2, 3)

    regression = RegressionTask()
    assert regression.serving_outputs(tf.constant([[1.5], [2.5]]))["predictions"].shape == (2,)
    assert regression.api_method == REGRESS_METHOD


def test_regression_head_starts_at_the_label_scale():
    task = RegressionTask(label_mean=150.0, label_std=70.0)
    x = keras.Input(shape=(3,))
    model = keras.Model(x, task.head(keras.layers.Lambda(lambda t: t * 0.0)(x)))
    assert model(np.ones((2, 3), np.float32)).numpy().ravel().tolist() == [150.0, 150.0]


def test_task_round_trips_through_custom_config_json():
    import json

    for task in (BinaryTask(), BinaryTask(positive="yes", negative="no"),
                 MulticlassTask(classes=("a", "b")), RegressionTask(label_mean=3.0)):
        assert task_from_dict(json.loads(json.dumps(task.to_dict()))) == task
    with pytest.raises(ValueError, match="unknown task 'ordinal'"):
        task_from_dict({"kind": "ordinal"})


def test_metrics_name_their_direction():
    assert BinaryTask.metric("AUC").higher_is_better is True
    assert RegressionTask.metric("MeanSquaredError").higher_is_better is False
    with pytest.raises(ValueError, match="AUC is not a regression metric; use one of "
                                         "MeanSquaredError, RootMeanSquaredError"):
        RegressionTask.metric("AUC")
