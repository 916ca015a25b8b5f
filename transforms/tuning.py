"""Hyperparameter search with KerasTuner over tf_keras models, as TFX's Tuner component runs it.

KerasTuner 1.4.8 checks built models against Keras 3, so its Keras tuners reject the tf_keras
models TFX trains. `TfKerasSearch` is a `BaseTuner` whose `run_trial` builds and fits the tf_keras
model itself; the algorithms are KerasTuner's own oracles (random search, Bayesian optimisation,
Hyperband). The objective is the task's: its history metric on the eval data, in its direction.

The search space names hyperparameters of the built-in model (`BUILT_IN`) and any a user's
`build_fn` declares in a `search_space` attribute (same format):

    def build(features, task, hyperparameters):
        rate = hyperparameters.values.get("dropout", 0.0)
        ...
    build.search_space = {"dropout": {"values": [0.0, 0.2]}}

An entry is `{"values": [...]}` (a choice) or `{"min": a, "max": b, "step": s, "sampling":
"linear" | "log"}` (integers when min, max and step are integers).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from typing import Any

import keras_tuner as kt
import tensorflow_transform as tft
import tf_keras as keras
from keras_tuner.engine import trial as trial_module
from tfx import v1 as tfx

from skewless.transforms.features import FeaturePlan, import_callable
from skewless.transforms.network import build_model, tuned_hyperparameters
from skewless.transforms.training import prepare_plan, train_and_eval_datasets

TUNING_KEY = "skewless_tuning"
ALGORITHMS = ("random", "bayesian", "hyperband")
# The built-in model's hyperparameters; `units` is one width per hidden layer (units_0, ...).
BUILT_IN = ("layers", "units", "learning_rate", "embedding_dim", "batch_size")
# Hyperband's own hyperparameters in a trial (the epochs to train to, and from where).
HYPERBAND_EPOCHS = "tuner/epochs"
HYPERBAND_INITIAL_EPOCH = "tuner/initial_epoch"
HYPERBAND_RESUMED_TRIAL = "tuner/trial_id"
WEIGHTS_FILE = "weights.h5"


@dataclasses.dataclass(frozen=True)
class TuningPlan:
    """The search: space (built-in and build_fn entries merged), algorithm, trials and budget."""

    search_space: dict[str, dict[str, Any]]
    algorithm: str = "random"
    max_trials: int = 3
    seed: int = 42
    hyperband_max_epochs: int = 4
    hyperband_factor: int = 2

    def fingerprint(self) -> str:
        """A hash of everything that decides the search's outcome except the data."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_custom_config(self) -> dict[str, Any]:
        return {TUNING_KEY: dataclasses.asdict(self)}

    @classmethod
    def from_custom_config(cls, custom_config: dict[str, Any]) -> TuningPlan:
        """Raises ValueError when the custom_config carries no tuning plan."""
        if not custom_config or TUNING_KEY not in custom_config:
            raise ValueError(f"custom_config has no {TUNING_KEY!r}; build it with TuningPlan")
        return cls(**custom_config[TUNING_KEY])


def declared_search_space(plan: FeaturePlan) -> dict[str, dict[str, Any]]:
    """The `search_space` attribute of the plan's build_fn (empty for the built-in model)."""
    if plan.build_fn is None:
        return {}
    return dict(getattr(import_callable(plan.build_fn), "search_space", None) or {})


def _declare(hp: kt.HyperParameters, name: str, entry: dict[str, Any]) -> None:
    if "values" in entry:
        hp.Choice(name, list(entry["values"]), ordered=False)
        return
    low, high, step = entry["min"], entry["max"], entry.get("step")
    sampling = entry.get("sampling", "linear")
    if all(isinstance(v, int) for v in (low, high, step or 1)):
        hp.Int(name, low, high, step=step or 1, sampling=sampling)
    else:
        hp.Float(name, low, high, step=step, sampling=sampling)


def _possible(entry: dict[str, Any]) -> list[int]:
    if "values" in entry:
        return list(entry["values"])
    return list(range(entry["min"], entry["max"] + 1, entry.get("step") or 1))


def hyperparameter_space(plan: FeaturePlan, tuning: TuningPlan) -> kt.HyperParameters:
    """KerasTuner's search space: a width per hidden layer, active only when the layer exists."""
    hp = kt.HyperParameters()
    space = tuning.search_space
    for name, entry in space.items():
        if name not in ("layers", "units"):
            _declare(hp, name, entry)
    if "layers" in space:
        _declare(hp, "layers", space["layers"])
    if "units" in space:
        layers = _possible(space["layers"]) if "layers" in space else [len(plan.hidden_units)]
        for index in range(max(layers)):
            if "layers" in space:
                with hp.conditional_scope("layers", [n for n in layers if n > index]):
                    _declare(hp, f"units_{index}", space["units"])
            else:
                _declare(hp, f"units_{index}", space["units"])
    return hp


def make_oracle(tuning: TuningPlan, objective: kt.Objective, hp: kt.HyperParameters):
    """KerasTuner's oracle for the algorithm. Failed trials never stop the search midway: the
    executor decides once every trial has ended."""
    common = dict(objective=objective, seed=tuning.seed, hyperparameters=hp,
                  max_consecutive_failed_trials=tuning.max_trials + 1)
    if tuning.algorithm == "random":
        return kt.oracles.RandomSearchOracle(max_trials=tuning.max_trials, **common)
    if tuning.algorithm == "bayesian":
        return kt.oracles.BayesianOptimizationOracle(
            max_trials=tuning.max_trials, num_initial_points=min(2, tuning.max_trials), **common)
    if tuning.algorithm == "hyperband":
        oracle = kt.oracles.HyperbandOracle(
            max_epochs=tuning.hyperband_max_epochs, factor=tuning.hyperband_factor, **common)
        oracle.max_trials = tuning.max_trials  # Hyperband's brackets, cut at max_trials
        return oracle
    raise ValueError(f"unknown algorithm {tuning.algorithm!r}; expected one of {ALGORITHMS}")


class TfKerasSearch(kt.engine.base_tuner.BaseTuner):
    """A KerasTuner tuner for tf_keras models: each trial builds the plan's model with the
    trial's hyperparameters, trains it for `train_steps` and scores it on `eval_steps` batches.

    A trial whose loss becomes NaN or infinite fails (recorded, not retried); the others go on.
    """

    def __init__(self, oracle, *, schema, plan: FeaturePlan, datasets, train_steps: int,
                 eval_steps: int, hyperband_max_epochs: int, **kwargs):
        super().__init__(oracle, **kwargs)
        self._schema, self._plan, self._datasets = schema, plan, datasets
        self._train_steps, self._eval_steps = train_steps, eval_steps
        self._max_epochs = hyperband_max_epochs

    def run_trial(self, trial, *fit_args, **fit_kwargs) -> dict[str, float]:
        values = dict(trial.hyperparameters.values)
        hyperparameters, batch_size = tuned_hyperparameters(self._plan, values)
        keras.backend.clear_session()
        keras.utils.set_random_seed(self._plan.seed)
        model = build_model(self._schema, self._plan, hyperparameters)
        if HYPERBAND_EPOCHS in values:  # Hyperband: budget in epochs, resuming a parent trial
            epochs, initial = values[HYPERBAND_EPOCHS], values.get(HYPERBAND_INITIAL_EPOCH, 0)
            steps = max(1, self._train_steps // self._max_epochs)
            parent = values.get(HYPERBAND_RESUMED_TRIAL)
            if parent and initial:
                model.load_weights(os.path.join(self.get_trial_dir(parent), WEIGHTS_FILE))
        else:  # one epoch: the trial's score is the objective at its end
            epochs, initial, steps = 1, 0, self._train_steps
        train, evaluation = self._datasets(batch_size)
        history = model.fit(train, epochs=epochs, initial_epoch=initial, steps_per_epoch=steps,
                            validation_data=evaluation, validation_steps=self._eval_steps,
                            callbacks=[keras.callbacks.TerminateOnNaN()], verbose=0).history
        losses = history.get("loss", [])
        if not losses or not all(math.isfinite(v) for v in losses):
            raise kt.errors.FailedTrialError(
                f"the training loss became {losses[-1] if losses else 'undefined'} "
                f"(hyperparameters {_shown(values)})")
        name = self.oracle.objective.name
        if name not in history:
            raise kt.errors.FatalError(f"training reported no {name!r}; it reported "
                                       f"{', '.join(sorted(history))}")
        trial_dir = self.get_trial_dir(trial.trial_id)
        os.makedirs(trial_dir, exist_ok=True)
        model.save_weights(os.path.join(trial_dir, WEIGHTS_FILE))
        return {name: float(history[name][-1])}


def _shown(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()) if not k.startswith("tuner/"))


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """One trial as the Tuner records it: its values, status, score and why it failed."""

    trial_id: str
    status: str
    score: float | None
    hyperparameters: dict[str, Any]
    error: str | None = None


def trial_records(tuner: kt.engine.base_tuner.BaseTuner) -> list[TrialRecord]:
    """Every trial of a finished search, in the order they ran."""
    records = []
    for trial_id in tuner.oracle.start_order:
        trial = tuner.oracle.trials[trial_id]
        completed = trial.status == trial_module.TrialStatus.COMPLETED
        score = trial.score if completed and trial.score is not None else None
        records.append(TrialRecord(
            trial_id=trial_id,
            status="completed" if completed else "failed",
            score=None if score is None or math.isnan(score) else float(score),
            hyperparameters=dict(trial.hyperparameters.values),
            error=None if completed else _last_line(trial.message),
        ))
    return records


def _last_line(message: str | None) -> str:
    """The exception line of a traceback KerasTuner kept."""
    lines = [line.strip() for line in (message or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def tuner_fn(fn_args: Any) -> tfx.components.TunerFnResult:
    """The Tuner component's entry point: the search over the transformed examples."""
    plan = FeaturePlan.from_custom_config(fn_args.custom_config)
    tuning = TuningPlan.from_custom_config(fn_args.custom_config)
    tft_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    keras.utils.set_random_seed(plan.seed)
    plan = prepare_plan(plan, fn_args, tft_output)

    def datasets(batch_size: int):
        return train_and_eval_datasets(dataclasses.replace(plan, batch_size=batch_size),
                                       fn_args, tft_output)

    name, direction = plan.task.tuning_objective
    objective = kt.Objective(name, direction)
    search = TfKerasSearch(
        make_oracle(tuning, objective, hyperparameter_space(plan, tuning)),
        schema=tft_output.transformed_metadata.schema,
        plan=plan,
        datasets=datasets,
        train_steps=fn_args.train_steps,
        eval_steps=max(1, fn_args.eval_steps),
        hyperband_max_epochs=tuning.hyperband_max_epochs,
        directory=fn_args.working_dir,
        project_name="search",
        overwrite=True,
    )
    return tfx.components.TunerFnResult(tuner=search, fit_kwargs={})
