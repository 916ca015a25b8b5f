"""InfraValidator: the candidate must load and answer on the serving stack before it is pushed."""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import infra_validator_pb2
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from skewless.components.infra_validator import executor


class InfraValidatorSpec(ComponentSpec):
    """TFX's InfraValidator spec without `serving_spec` (no Docker, no Kubernetes), with a
    latency limit."""

    PARAMETERS = {
        executor.VALIDATION_SPEC_KEY: ExecutionParameter(type=infra_validator_pb2.ValidationSpec),
        executor.REQUEST_SPEC_KEY: ExecutionParameter(type=infra_validator_pb2.RequestSpec),
        executor.MAX_LATENCY_MS_KEY: ExecutionParameter(type=float),
    }
    INPUTS = {
        executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {
        executor.BLESSING_KEY: ChannelParameter(type=standard_artifacts.InfraBlessing),
    }


class InfraValidator(base_component.BaseComponent):
    """Serves the model on skewless's server (free loopback ports, in the executor's process),
    sends each of `request_spec.num_examples` rows of `request_spec.split_name` as a Predict
    request over REST and over gRPC, and blesses it only if it loads within
    `validation_spec.max_loading_time_seconds` (warm-up included), every answer is well formed
    and equals the in-process prediction, and no request takes over `max_latency_ms`.

    With `request_spec.make_warmup`, the blessed model under the blessing carries those requests
    as `assets.extra/tf_serving_warmup_requests`; the Pusher pushes that copy.
    """

    SPEC_CLASS = InfraValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        examples: types.BaseChannel,
        validation_spec: infra_validator_pb2.ValidationSpec,
        request_spec: infra_validator_pb2.RequestSpec,
        max_latency_ms: float,
    ):
        super().__init__(spec=InfraValidatorSpec(
            model=model,
            examples=examples,
            validation_spec=validation_spec,
            request_spec=request_spec,
            max_latency_ms=max_latency_ms,
            blessing=types.Channel(type=standard_artifacts.InfraBlessing),
        ))
