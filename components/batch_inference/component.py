"""BatchInference: a pushed model's predictions for every example, written as one table."""

from __future__ import annotations

import json

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from skewless.components.batch_inference import executor


class BatchInferenceSpec(ComponentSpec):
    PARAMETERS = {
        executor.OUTPUT_PATH_KEY: ExecutionParameter(type=str),
        executor.OUTPUT_FORMAT_KEY: ExecutionParameter(type=str),
        executor.KEEP_KEY: ExecutionParameter(type=str),
        executor.OVERWRITE_KEY: ExecutionParameter(type=int),
    }
    INPUTS = {
        executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.PushedModel),
    }
    OUTPUTS = {executor.PREDICTIONS_KEY: ChannelParameter(type=standard_artifacts.InferenceResult)}


class BatchInference(base_beam_component.BaseBeamComponent):
    """Scores `examples` with the `serving_tf_example` signature of the pushed `model` and writes
    the kept input columns (all when `keep` is empty) and the predictions to `output_path`.

    Fails unless every example gets a prediction, and refuses an existing `output_path` unless
    `overwrite`. The output artifact records the path, the model version and the row counts.
    """

    SPEC_CLASS = BatchInferenceSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        model: types.BaseChannel,
        output_path: str | types.RuntimeParameter,
        output_format: str = "parquet",
        keep: tuple[str, ...] = (),
        overwrite: bool = False,
    ):
        super().__init__(spec=BatchInferenceSpec(
            examples=examples,
            model=model,
            output_path=output_path,
            output_format=output_format,
            keep=json.dumps(list(keep)),
            overwrite=int(overwrite),
            predictions=types.Channel(type=standard_artifacts.InferenceResult),
        ))
