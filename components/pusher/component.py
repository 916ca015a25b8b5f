"""Pusher: TFX's Pusher declaration with the atomic filesystem executor."""

from tfx.components import Pusher as TfxPusher
from tfx.dsl.components.base import executor_spec

from skewless.components.pusher import executor


class Pusher(TfxPusher):
    """Pushes only models that the Evaluator blessed and the InfraValidator validated on a
    server, as `<push dir>/<model name>/<integer version>/`: the validated copy, which carries
    its warm-up requests."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, *, model, model_blessing, infra_blessing, push_destination):
        super().__init__(model=model, model_blessing=model_blessing,
                         infra_blessing=infra_blessing, push_destination=push_destination)
