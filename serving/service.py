"""The transport-neutral serving API that the gRPC and REST front ends both call."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tensorflow_serving.apis import classification_pb2, input_pb2, predict_pb2, regression_pb2

from skewless.serving import classify_regress, inference
from skewless.serving.batching import BatchScheduler
from skewless.serving.errors import invalid_argument
from skewless.serving.manager import ModelManager, VersionStatus
from skewless.serving.servable import LoadedModel, Signature

if TYPE_CHECKING:  # request_log builds responses with responses.py, which imports this module
    from skewless.serving.request_log import RequestLogs


@dataclass(frozen=True)
class ModelSpec:
    """Which model, version and signature a request addresses."""

    name: str
    version: int | None = None
    label: str = ""
    signature_name: str = ""


@dataclass(frozen=True)
class Prediction:
    """A Predict answer: the version that served it and the named outputs."""

    model_name: str
    version: int
    signature_name: str
    outputs: dict[str, np.ndarray]


@dataclass(frozen=True)
class ExamplesAnswer:
    """A Classify or Regress answer: the signature that served it and the result."""

    signature_name: str
    result: classification_pb2.ClassificationResult | regression_pb2.RegressionResult


def _run_merged(
    model: LoadedModel,
    signature: Signature,
    input_aliases: tuple[str, ...],
    output_aliases: tuple[str, ...],
    values: list[np.ndarray],
) -> list[np.ndarray]:
    return model.run(signature, input_aliases, values, output_aliases)


class InferenceService:
    """Predict, Classify, Regress, metadata and status over the manager's loaded versions.

    Args:
        manager: Resolves model specs to loaded versions.
        executor: Runs unbatched model calls.
        scheduler: Merges concurrent calls into batches; None disables batching.
        request_logs: Logs sampled requests of the models that have a ``logging_config``.
    """

    def __init__(
        self,
        manager: ModelManager,
        executor: Executor,
        scheduler: BatchScheduler | None = None,
        request_logs: RequestLogs | None = None,
    ) -> None:
        self.manager = manager
        self._executor = executor
        self._scheduler = scheduler
        self._request_logs = request_logs

    @contextmanager
    def acquired(self, spec: ModelSpec) -> Iterator[LoadedModel]:
        """The loaded version a spec addresses, referenced (kept loaded) inside the block.

        Raises:
            ServingError: NOT_FOUND / INVALID_ARGUMENT as TF Serving.
        """
        _check_version_choice(spec)
        model = self.manager.acquire(spec.name, spec.version, spec.label)
        try:
            yield model
        finally:
            model.release()

    async def execute(self, plan: inference.PlannedRun) -> dict[str, np.ndarray]:
        """Runs a planned call from the event loop, batched when batching is on.

        Raises:
            ServingError: UNAVAILABLE when the batch queue is full, or the model's error.
        """
        if self._scheduler is None or plan.size <= 0:
            loop = asyncio.get_running_loop()
            return plan.outputs(await loop.run_in_executor(self._executor, plan.run))
        key = (plan.model, plan.signature.name, plan.input_aliases, plan.output_aliases)
        run = functools.partial(
            _run_merged, plan.model, plan.signature, plan.input_aliases, plan.output_aliases
        )
        future = self._scheduler.submit(key, run, plan.input_values, plan.size, plan.model.name)
        return plan.outputs(await future)

    async def predict(
        self,
        model: LoadedModel,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        request: predict_pb2.PredictRequest | None = None,
    ) -> Prediction:
        """Predict on an acquired version with a signature from ``inference.predict_signature``.

        ``request`` is the gRPC PredictRequest the inputs were decoded from, which a request log
        copies as is.

        Raises:
            ServingError: As TF Serving for bad inputs or outputs.
        """
        plan = inference.plan_predict(model, signature, inputs, output_filter)
        outputs = await self.execute(plan)
        if self._request_logs is not None:
            self._request_logs.predict(
                model.name, model.version, plan.signature.name, inputs, outputs, output_filter,
                request,
            )
        return Prediction(model.name, model.version, plan.signature.name, outputs)

    async def classify(
        self, model: LoadedModel, signature_name: str, request_input: input_pb2.Input
    ) -> ExamplesAnswer:
        """Classify on an acquired version.

        Raises:
            ServingError: As TF Serving for a bad signature or examples.
        """
        plan = inference.plan_classify(model, signature_name, request_input)
        outputs = await self.execute(plan)
        answer = ExamplesAnswer(
            plan.signature.name, classify_regress.classification_result(plan.size, outputs)
        )
        self._log_examples("classify", model, request_input, answer)
        return answer

    async def regress(
        self, model: LoadedModel, signature_name: str, request_input: input_pb2.Input
    ) -> ExamplesAnswer:
        """Regress on an acquired version.

        Raises:
            ServingError: As TF Serving for a bad signature or examples.
        """
        plan = inference.plan_regress(model, signature_name, request_input)
        outputs = await self.execute(plan)
        answer = ExamplesAnswer(
            plan.signature.name, classify_regress.regression_result(plan.size, outputs)
        )
        self._log_examples("regress", model, request_input, answer)
        return answer

    def _log_examples(
        self, api: str, model: LoadedModel, request_input: input_pb2.Input, answer: ExamplesAnswer
    ) -> None:
        if self._request_logs is not None:
            self._request_logs.examples(
                api, model.name, model.version, answer.signature_name, request_input, answer.result
            )

    def status(self, spec: ModelSpec) -> list[VersionStatus]:
        """GetModelStatus for a spec.

        Raises:
            ServingError: NOT_FOUND / INVALID_ARGUMENT as TF Serving.
        """
        _check_version_choice(spec)
        return self.manager.status(spec.name, spec.version, spec.label)


def _check_version_choice(spec: ModelSpec) -> None:
    if spec.version is not None and spec.label:
        raise invalid_argument(
            f"Both model version ({spec.version}) and model version label ({spec.label}) "
            "cannot be supplied."
        )
