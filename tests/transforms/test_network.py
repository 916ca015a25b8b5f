"""The model per task from a transformed schema: the built-in network, a user's build_fn, and
one-line errors for a build_fn that does not fit the task."""

from __future__ import annotations

import numpy as np
import pytest
from tensorflow_metadata.proto.v0 import schema_pb2

from skewless.transforms.features import WEIGHT_KEY, FeaturePlan
from skewless.transforms.network import build_model, model_inputs
from skewless.transforms.task import BinaryTask, MulticlassTask, RegressionTask
from tests.transforms.custom_network import CUSTOM_LAYER


def _schema(floats=("a_xf", "b_xf"), ints=(("c_xf", 4),), label="y") -> schema_pb2.Schema:
    schema = schema_pb2.Schema()
    for name in floats:
        schema.feature.add(name=name, type=schema_pb2.FLOAT)
    for name, size in ints:
        feature = schema.feature.add(name=name, type=schema_pb2.INT)
        feature.int_domain.min, feature.int_domain.max = 0, size - 1
    schema.feature.add(name=label, type=schema_pb2.INT)
    schema.feature.add(name=WEIGHT_KEY, type=schema_pb2.FLOAT)
    return schema


def _batch(n=5):
    return {"a_xf": np.zeros((n, 1), np.float32), "b_xf": np.ones((n, 1), np.float32),
            "c_xf": np.arange(n, dtype=np.int64).reshape(n, 1) % 4}


def test_inputs_leave_out_the_label_and_its_weight():
    features = model_inputs(_schema(), "y")
    assert list(features) == ["a_xf", "b_xf", "c_xf"]
    assert features["c_xf"].categories == 4 and features["a_xf"].categories is None


@pytest.mark.parametrize("task, width", [
    (BinaryTask(), 1), (MulticlassTask(classes=("a", "b", "c")), 3), (RegressionTask(), 1)])
def test_built_in_network_has_the_task_head(task, width):
    model = build_model(_schema(), FeaturePlan(label="y", task=task, hidden_units=(4,)))
    out = model.predict(_batch(), verbose=0)
    assert out.shape == (5, width)
    if task.kind == "multiclass":
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert model.loss == task.loss


def test_users_build_fn_is_used():
    plan = FeaturePlan(label="y", task=MulticlassTask(classes=("a", "b", "c")),
                       build_fn="tests.transforms.custom_network.build")
    model = build_model(_schema(), plan)
    assert CUSTOM_LAYER in [layer.name for layer in model.layers]
    assert model.predict(_batch(), verbose=0).shape == (5, 3)


@pytest.mark.parametrize("builder, message", [
    ("wrong_head", "tests.transforms.custom_network.wrong_head: the model's output has shape "
                   "(None, 2); task multiclass expects (None, 3) (use task.head(x) as the last "
                   "layer)"),
    ("uncompiled", "tests.transforms.custom_network.uncompiled returned a model that is not "
                   "compiled (use task.compile)"),
    ("not_a_model", "tests.transforms.custom_network.not_a_model returned str, not a tf_keras "
                    "Model"),
])
def test_build_fn_that_does_not_fit_the_task_is_one_line(builder, message):
    plan = FeaturePlan(label="y", task=MulticlassTask(classes=("a", "b", "c")),
                       build_fn=f"tests.transforms.custom_network.{builder}")
    with pytest.raises(ValueError) as caught:
        build_model(_schema(ints=()), plan)
    assert str(caught.value) == message
