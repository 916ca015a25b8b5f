"""Tuner: TFX's Tuner declaration with an executor that records failed trials."""

from tfx.components import Tuner as TfxTuner
from tfx.dsl.components.base import executor_spec

from skewless.components.tuner import executor


class Tuner(TfxTuner):
    """Searches hyperparameters; outputs the best (`best_hyperparameters`) and every trial."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
