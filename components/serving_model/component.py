"""ServingModel: the pushed model version a batch job scores with, and its SERVING schema."""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from skewless.components.serving_model import executor


class ServingModelSpec(ComponentSpec):
    PARAMETERS = {
        executor.MODEL_BASE_PATH_KEY: ExecutionParameter(type=str),
        executor.VERSION_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {}
    OUTPUTS = {
        executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.PushedModel),
        executor.SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema),
    }


class ServingModel(base_component.BaseComponent):
    """Outputs the pushed version (`version`, or the newest when empty) under `model_base_path`
    as a PushedModel, and the schema exported inside it, as data must meet it in SERVING."""

    SPEC_CLASS = ServingModelSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model_base_path: str, version: str | types.RuntimeParameter = ""):
        super().__init__(spec=ServingModelSpec(
            model_base_path=model_base_path,
            version=version,
            model=types.Channel(type=standard_artifacts.PushedModel),
            schema=types.Channel(type=standard_artifacts.Schema),
        ))
