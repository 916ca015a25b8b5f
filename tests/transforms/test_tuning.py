"""The search over tf_keras models: KerasTuner's oracles driving `TfKerasSearch` on tiny in-memory
data, failed trials recorded and skipped, and tuned values turned into the model's."""

from __future__ import annotations

import keras_tuner as kt
import numpy as np
import pytest
import tensorflow as tf

from skewless.transforms.features import FeaturePlan
from skewless.transforms.network import tuned_hyperparameters
from skewless.transforms.task import MulticlassTask, RegressionTask
from skewless.transforms.tuning import (
    TfKerasSearch,
    TuningPlan,
    declared_search_space,
    hyperparameter_space,
    make_oracle,
    trial_records,
)
from tests.transforms.test_network import _schema

TASK = MulticlassTask(classes=("a", "b", "c"))


def test_task_objective_is_its_history_metric_on_eval_data_in_its_direction():
    assert TASK.tuning_objective == ("val_accuracy", "max")
    assert RegressionTask().tuning_objective == ("val_mae", "min")


def test_units_per_layer_are_active_only_for_layers_that_exist():
    plan = FeaturePlan(label="y", task=TASK, hidden_units=(8, 8))
    tuning = TuningPlan(search_space={"layers": {"values": [1, 3]},
                                      "units": {"values": [4, 16]},
                                      "learning_rate": {"min": 1e-4, "max": 1e-1,
                                                        "sampling": "log"}})
    hp = hyperparameter_space(plan, tuning)
    assert {p.name for p in hp.space} == {"layers", "units_0", "units_1", "units_2",
                                          "learning_rate"}
    hp.values.update(layers=1)
    assert hp.is_active("units_0") and not hp.is_active("units_1")


def test_tuned_values_replace_the_plans():
    plan = FeaturePlan(label="y", task=TASK, hidden_units=(8, 6), batch_size=32)
    hyper, batch = tuned_hyperparameters(
        plan, {"layers": 3, "units_0": 16, "learning_rate": 0.05, "batch_size": 8})
    assert hyper.hidden_units == (16, 6, 6)  # untuned widths are the plan's (its last beyond)
    assert (hyper.learning_rate, batch, hyper.embedding_dim) == (0.05, 8, plan.embedding_dim)
    assert tuned_hyperparameters(plan, None)[0].hidden_units == (8, 6)


def _datasets(batch_size):
    rng = np.random.default_rng(0)
    n = 64
    features = {"a_xf": rng.normal(size=(n, 1)).astype(np.float32),
                "b_xf": rng.normal(size=(n, 1)).astype(np.float32),
                "c_xf": rng.integers(0, 4, size=(n, 1))}
    label = (features["a_xf"][:, 0] > 0).astype(np.int64) + (features["b_xf"][:, 0] > 1)
    data = tf.data.Dataset.from_tensor_slices((features, label, np.ones(n, np.float32)))
    return data.batch(batch_size).repeat(), data.batch(batch_size).repeat()


def _search(tmp_path, space, max_trials=4):
    plan = FeaturePlan(label="y", task=TASK, build_fn="tests.transforms.custom_network.poisonable",
                       learning_rate=0.05)
    tuning = TuningPlan(search_space=space, max_trials=max_trials)
    search = TfKerasSearch(
        make_oracle(tuning, kt.Objective(*TASK.tuning_objective),
                    hyperparameter_space(plan, tuning)),
        schema=_schema(), plan=plan, datasets=_datasets, train_steps=10, eval_steps=2,
        hyperband_max_epochs=2, directory=str(tmp_path), project_name="search", overwrite=True)
    search.search()
    return search, trial_records(search)


def test_a_trial_with_nan_loss_is_recorded_and_skipped(tmp_path):
    plan = FeaturePlan(label="y", build_fn="tests.transforms.custom_network.poisonable")
    search, records = _search(tmp_path, declared_search_space(plan))
    assert len(records) == 2  # both values of poison: the failure did not stop the search
    [failed] = [r for r in records if r.status == "failed"]
    assert failed.hyperparameters["poison"] == 1
    assert failed.score is None and "the training loss became nan" in failed.error
    completed = [r for r in records if r.status == "completed"]
    best = max(completed, key=lambda r: r.score)
    assert search.get_best_hyperparameters()[0].values == best.hyperparameters


def test_a_search_whose_trials_all_fail_has_no_completed_trial(tmp_path):
    _, records = _search(tmp_path, {"poison": {"values": [1]}}, max_trials=2)
    assert [r.status for r in records] == ["failed"]


@pytest.mark.parametrize("algorithm", ["bayesian", "hyperband"])
def test_other_algorithms_run_on_tf_keras_models(tmp_path, algorithm):
    plan = FeaturePlan(label="y", task=TASK, hidden_units=(4,), learning_rate=0.05)
    tuning = TuningPlan(search_space={"units": {"values": [2, 6]}}, algorithm=algorithm,
                        max_trials=2, hyperband_max_epochs=2)
    search = TfKerasSearch(
        make_oracle(tuning, kt.Objective(*TASK.tuning_objective),
                    hyperparameter_space(plan, tuning)),
        schema=_schema(), plan=plan, datasets=_datasets, train_steps=4, eval_steps=1,
        hyperband_max_epochs=2, directory=str(tmp_path), project_name="s", overwrite=True)
    search.search()
    records = trial_records(search)
    assert 1 <= len(records) <= 2
    assert all(r.status == "completed" and 0 <= r.score <= 1 for r in records)
