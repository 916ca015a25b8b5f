"""Tuning end to end on iris (`skewless run` in a subprocess): TFX's Tuner searches, the Trainer
trains with exactly the best trial's values, `reuse: latest` skips the search while the search
space is unchanged, and a changed space searches again — here one whose every trial fails, which
stops the run with one line. (Single failing trials: tests/transforms/test_tuning.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tensorflow as tf
import yaml

from skewless.pipeline import build
from skewless.pipeline.config import load_config
from skewless.pipeline.registry import Registry
from skewless.pipeline.store import connect, latest_output
from tests.conftest import IRIS_CONFIG, REPO, write_config
from tests.pipeline.helpers import skewless, states

pytestmark = pytest.mark.e2e

SPACE = {"layers": [1, 2], "units": [3, 24], "learning_rate": [0.0005, 0.05]}
# Adam moves every weight by about the learning rate per step: 1e30 overflows at once.
EXPLODING = 1.0e30


def _config(workdir: Path, space: dict, name: str) -> Path:
    raw = yaml.safe_load(IRIS_CONFIG.read_text())
    raw["pipeline"]["output_dir"] = str(workdir / "out")
    raw["data"]["path"] = str(REPO / "data" / "iris" / "data.csv")
    raw["serving"]["push_dir"] = str(workdir / "serving")
    raw["metadata"]["sqlite"] = str(workdir / "out" / "metadata.sqlite")
    raw["model"].update(train_steps=60, eval_steps=5)
    raw["evaluation"] = {}
    raw["tuning"] = {"algorithm": "random", "max_trials": 2, "train_steps": 30,
                     "eval_steps": 5, "reuse": "latest", "search_space": space}
    return write_config(workdir / f"{name}.yaml", raw)


def _run(path: Path, workdir: Path):
    return skewless("run", "--config", str(path), tmpdir=workdir / "tmp")


def _trials(config) -> list[dict]:
    results = latest_output(connect(config), config.pipeline.name, build.TUNER, "TunerResults")
    return json.loads((Path(results.uri) / "trials.json").read_text())


def _hidden_widths(config) -> list[int]:
    """The trained model's hidden layers, read from its kernels: [(inputs, units), ...]."""
    model = latest_output(connect(config), config.pipeline.name, build.TRAINER, "Model")
    loaded = tf.saved_model.load(str(Path(model.uri) / "Format-Serving"))
    kernels = [v for v in loaded.variables if v.name.endswith("kernel:0")
               and not v.name.startswith("head/")]
    chain, width = [], 4  # iris's four numeric features
    shapes = [tuple(v.shape) for v in kernels]
    while shapes:
        [step] = [s for s in shapes if s[0] == width][:1]
        shapes.remove(step)
        chain.append(step[1])
        width = step[1]
    return chain, float(loaded.optimizer.learning_rate.numpy())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tuning")
    first = _config(workdir, SPACE, "first")
    failing = _config(workdir, {"learning_rate": [EXPLODING]}, "failing")
    results = {"first": _run(first, workdir)}
    config = load_config(first)
    results["first_trials"] = _trials(config)
    results["first_model"] = _hidden_widths(config)
    results["again"] = _run(first, workdir)
    results["failing"] = _run(failing, workdir)
    return config, results


def _expected(values: dict) -> tuple[list[int], float]:
    return [values[f"units_{i}"] for i in range(values["layers"])], values["learning_rate"]


def _best(trials: list[dict]) -> dict:
    completed = [t for t in trials if t["status"] == "completed"]
    return max(completed, key=lambda t: t["score"])  # val_accuracy: higher is better


def test_search_picks_the_best_trial_and_the_trainer_uses_exactly_its_values(runs):
    config, results = runs
    result = results["first"]
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    assert states(result.stdout)["Tuner"] == "executed"
    trials = results["first_trials"]
    assert len(trials) == 2 and all(t["status"] == "completed" for t in trials)
    best = _best(trials)["hyperparameters"]
    widths, rate = results["first_model"]
    assert (widths, pytest.approx(rate)) == _expected(best)
    shown = ", ".join(f"{k}={v}" for k, v in sorted(best.items()))
    assert f"hyperparameters: {shown} (best of 2 trials; val_accuracy " in result.stdout


def test_reuse_latest_does_not_search_again(runs):
    config, results = runs
    result = results["again"]
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    ran = states(result.stdout)
    assert "Tuner" not in ran
    assert ran["HyperparametersImporter"] in ("executed", "cached")
    assert ran["Trainer"] == "cached"  # the very hyperparameters artifact of the first search
    assert "(reused from an earlier search of the same space)" in result.stdout


def test_registry_shows_the_models_hyperparameters(runs):
    config, results = runs
    models = Registry(connect(config), config.pipeline.name).models()
    best = _best(results["first_trials"])["hyperparameters"]
    assert models.iloc[0]["hyperparameters"] == ", ".join(
        f"{k}={v}" for k, v in sorted(best.items()))


def test_changed_search_space_searches_again_and_all_failed_trials_stop_the_run(runs):
    _, results = runs
    result = results["failing"]
    assert result.returncode == 1
    ran = states(result.stdout)
    assert ran["Transform"] == "cached" and ran["Tuner"] == "failed"
    assert "HyperparametersImporter" not in ran and "Trainer" not in ran
    [line] = [x for x in result.stderr.splitlines() if x.startswith("Error:")]
    assert line.startswith("Error: Tuner failed: AllTrialsFailed: every trial of the "
                           "hyperparameter search failed (1 of 1); the first: ")
    assert "loss became" in line
