"""BaselineModel: the currently pushed model as a Model artifact, for the Evaluator."""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from skewless.components.baseline_model import executor


class BaselineModelSpec(ComponentSpec):
    PARAMETERS = {executor.PUSH_DIR_KEY: ExecutionParameter(type=str)}
    INPUTS = {executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model)}
    OUTPUTS = {executor.BASELINE_KEY: ChannelParameter(type=standard_artifacts.Model)}


class BaselineModel(base_component.BaseComponent):
    """The newest version under `model_push_dir` (what TF Serving serves), copied into a Model.

    The candidate `model` is an input so that the component runs again whenever a new model is
    trained (caching keys on inputs) and so that a model is never its own baseline. On the first
    run the output holds no model and says so (`baseline_found` 0).
    """

    SPEC_CLASS = BaselineModelSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel, model_push_dir: str):
        super().__init__(
            spec=BaselineModelSpec(
                model=model,
                model_push_dir=model_push_dir,
                baseline_model=types.Channel(type=standard_artifacts.Model),
            )
        )
