"""The gRPC front end: ``tensorflow.serving.PredictionService`` and ``ModelService``.

Servicers for a ``grpc.aio`` server on the protos and stubs of the tensorflow-serving-api package,
running on the server's event loop next to the REST front end. A handler checks the request, then
awaits its batch (or a model call on the request threads). A thread-pool ``grpc.server`` needs a
thread per waiting request, and at 64 concurrent requests its thread hand-offs cost more CPU than
the model: with the GIL, one event loop serves several times more requests per second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
    status_pb2,
)

from skewless.serving import inference, tensors
from skewless.serving.config import ConfigError, model_configs_from_proto
from skewless.serving.errors import ServingError, failed_precondition, invalid_argument
from skewless.serving.metrics import ServingMetrics
from skewless.serving.responses import (
    fill_model_spec,
    metadata_response,
    model_spec_from_proto,
    status_response,
)
from skewless.serving.service import InferenceService

_Response = TypeVar("_Response")


class _Instrumented:
    def __init__(self, service: InferenceService, metrics: ServingMetrics | None) -> None:
        self._service = service
        self._metrics = metrics

    async def _call(
        self,
        api: str,
        model_name: str,
        context: grpc.aio.ServicerContext,
        handler: Callable[[], Awaitable[_Response]],
    ) -> _Response:
        start = time.perf_counter()
        status = "OK"
        try:
            return await handler()
        except ServingError as error:
            status = error.code.name
            await context.abort(error.code, error.message)
        finally:
            if self._metrics is not None:
                self._metrics.record_request(
                    model_name, api, "GRPC", status, time.perf_counter() - start
                )


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer, _Instrumented):
    """``tensorflow.serving.PredictionService`` over an :class:`InferenceService`."""

    async def Predict(self, request: predict_pb2.PredictRequest, context):  # noqa: N802
        async def handle() -> predict_pb2.PredictResponse:
            spec = model_spec_from_proto(request.model_spec)
            with self._service.acquired(spec) as model:
                signature = inference.predict_signature(model, spec.signature_name)
                inputs = {a: tensors.to_ndarray(p, a) for a, p in request.inputs.items()}
                prediction = await self._service.predict(
                    model, signature, inputs, list(request.output_filter), request
                )
            response = predict_pb2.PredictResponse()
            fill_model_spec(response.model_spec, model.name, model.version,
                            prediction.signature_name)
            for alias, array in prediction.outputs.items():
                tensors.fill_tensor_proto(response.outputs[alias], array)
            return response

        return await self._call("predict", request.model_spec.name, context, handle)

    async def Classify(  # noqa: N802
        self, request: classification_pb2.ClassificationRequest, context
    ):
        async def handle() -> classification_pb2.ClassificationResponse:
            spec = model_spec_from_proto(request.model_spec)
            with self._service.acquired(spec) as model:
                answer = await self._service.classify(model, spec.signature_name, request.input)
            response = classification_pb2.ClassificationResponse(result=answer.result)
            fill_model_spec(response.model_spec, model.name, model.version, answer.signature_name)
            return response

        return await self._call("classify", request.model_spec.name, context, handle)

    async def Regress(self, request: regression_pb2.RegressionRequest, context):  # noqa: N802
        async def handle() -> regression_pb2.RegressionResponse:
            spec = model_spec_from_proto(request.model_spec)
            with self._service.acquired(spec) as model:
                answer = await self._service.regress(model, spec.signature_name, request.input)
            response = regression_pb2.RegressionResponse(result=answer.result)
            fill_model_spec(response.model_spec, model.name, model.version, answer.signature_name)
            return response

        return await self._call("regress", request.model_spec.name, context, handle)

    async def GetModelMetadata(self, request, context):  # noqa: N802
        async def handle():
            return metadata_response(self._service, request)

        return await self._call("get_model_metadata", request.model_spec.name, context, handle)

    async def MultiInference(self, request, context):  # noqa: N802
        async def handle():
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not supported")

        return await self._call("multi_inference", "", context, handle)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer, _Instrumented):
    """``tensorflow.serving.ModelService``: model status and config reloads.

    ``worker_processes`` is how many server processes share the port (``--workers``): with more
    than one, a config reload would reach only the process that received it, and is refused.
    """

    def __init__(self, service: InferenceService, metrics: ServingMetrics | None,
                 worker_processes: int = 1) -> None:
        super().__init__(service, metrics)
        self._worker_processes = worker_processes

    async def GetModelStatus(self, request, context):  # noqa: N802
        async def handle():
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            return status_response(self._service.status(model_spec_from_proto(request.model_spec)))

        return await self._call("get_model_status", request.model_spec.name, context, handle)

    async def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        async def handle():
            if self._worker_processes > 1:
                raise failed_precondition(
                    "HandleReloadConfigRequest would reach only one of the "
                    f"{self._worker_processes} processes of `skewless serve --workers "
                    f"{self._worker_processes}`: change the --model_config_file instead, "
                    "which every worker re-reads (--model_config_file_poll_wait_seconds)"
                )
            try:
                models = model_configs_from_proto(request.config, "ReloadConfigRequest")
            except ConfigError as error:
                raise invalid_argument(str(error)) from None
            # Loading models takes seconds: off the event loop.
            await asyncio.get_running_loop().run_in_executor(
                None, self._service.manager.reload_config, models
            )
            return model_management_pb2.ReloadConfigResponse(
                status=status_pb2.StatusProto(error_code=0)
            )

        return await self._call("reload_config", "", context, handle)


def grpc_server_options(max_message_bytes: int, reuse_port: bool = False) -> list[tuple[str, int]]:
    """Channel options of the gRPC server (message size limits, SO_REUSEPORT)."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", int(reuse_port)),
    ]


def add_servicers(
    server: grpc.aio.Server,
    service: InferenceService,
    metrics: ServingMetrics | None,
    worker_processes: int = 1,
) -> None:
    """Registers both TF Serving services on a gRPC server."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(service, metrics), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(service, metrics, worker_processes), server
    )
