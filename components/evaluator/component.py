"""Evaluator: TFX's Evaluator declaration with the executor that records the baseline."""

from tfx.components import Evaluator as TfxEvaluator
from tfx.dsl.components.base import executor_spec

from skewless.components.evaluator import executor


class Evaluator(TfxEvaluator):
    """Evaluates the candidate against the BaselineModel's output, recording which it was."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
