"""The REST front end: TF Serving's HTTP API v1 on aiohttp.

Paths are matched with TF Serving's own regular expressions (http_rest_api_util.cc) on the raw
path, names and labels are then URL-decoded; bodies are decoded by :mod:`rest_codec`; errors
become ``{"error": ...}`` with TF Serving's HTTP status for the code.
"""

from __future__ import annotations

import asyncio
import re
import time
from urllib.parse import unquote

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from skewless.serving import inference, responses, rest_codec
from skewless.serving.errors import (
    ServingError,
    invalid_argument,
    resource_exhausted,
)
from skewless.serving.metrics import ServingMetrics
from skewless.serving.service import InferenceService, ModelSpec

_V1_PATH = re.compile(r"/v1/.*", re.IGNORECASE)
_PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:"
    r"(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_INT64_MAX = (1 << 63) - 1
_JSON = "application/json"


def parse_model_path(
    method: str, raw_path: str
) -> tuple[ModelSpec, str, str] | None:
    """Parses a v1 API path as TF Serving does.

    Args:
        method: The HTTP method.
        raw_path: The path, still URL-encoded.

    Returns:
        The model spec (name, version or label), the API verb (``predict``, ``classify``,
        ``regress``, ``status`` or ``metadata``) and the raw model name; None when the path
        does not match (a "Malformed request").

    Raises:
        ServingError: INVALID_ARGUMENT for a version that is not an int64, or both a version
            and a label.
    """
    if method == "POST":
        match = _PREDICTION_PATH.fullmatch(raw_path)
        if match is None:
            return None
        name, version, label, verb = match.groups()
        if verb not in ("predict", "classify", "regress"):
            return None
    elif method == "GET":
        match = _STATUS_PATH.fullmatch(raw_path)
        if match is None:
            return None
        name, version, label, sub = match.groups()
        verb = "metadata" if sub == "metadata" else "status"
    else:
        return None
    version_number = None
    if version is not None:
        if int(version) > _INT64_MAX:
            raise invalid_argument(f"Failed to convert version: {version} to numeric.")
        version_number = int(version)
    spec = ModelSpec(
        name=unquote(name) if name else "",
        version=version_number,
        label=unquote(label) if label else "",
    )
    return spec, verb, name or ""


class RestApi:
    """The aiohttp handler of the v1 API and the Prometheus endpoint.

    Args:
        service: The serving API.
        metrics: Request metrics, or None.
        prometheus_path: Where metrics are exposed, or None.
        timeout_seconds: Per-request deadline (``--rest_api_timeout_in_ms``); 0 for none.
        max_body_bytes: Larger request bodies are rejected with RESOURCE_EXHAUSTED.
    """

    def __init__(
        self,
        service: InferenceService,
        metrics: ServingMetrics | None,
        prometheus_path: str | None,
        timeout_seconds: float,
        max_body_bytes: int,
    ) -> None:
        self._service = service
        self._metrics = metrics
        self._prometheus_path = prometheus_path
        self._timeout = timeout_seconds or None
        self._max_body_bytes = max_body_bytes

    def server(self) -> web.Server:
        """The aiohttp low-level server (no router: TF Serving's dispatch is ours).

        Must be called on the event loop that serves it.
        """
        loop = asyncio.get_running_loop()

        def make_request(message, payload, protocol, writer, task) -> web.BaseRequest:
            return web.BaseRequest(
                message, payload, protocol, writer, task, loop,
                client_max_size=self._max_body_bytes,
            )

        return _JsonErrorServer(self.handle, request_factory=make_request, access_log=None)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answers one HTTP request."""
        raw_path = request.rel_url.raw_path
        if self._prometheus_path is not None and raw_path == self._prometheus_path:
            body = self._metrics.exposition() if self._metrics else b""
            return web.Response(body=body, content_type="text/plain")
        if not _V1_PATH.fullmatch(raw_path):
            return web.Response(status=404)
        start = time.perf_counter()
        model_name, api = "", "unknown"
        try:
            parsed = parse_model_path(request.method, raw_path)
            if parsed is None:
                raise invalid_argument(f"Malformed request: {request.method} {raw_path}")
            spec, api, model_name = parsed[0], parsed[1], parsed[0].name
            body = await self._read_body(request)
            async with asyncio.timeout(self._timeout):
                payload = await self._dispatch(spec, api, body)
            status = "OK"
            response = web.Response(body=payload, content_type=_JSON)
        except ServingError as error:
            status = error.code.name
            response = web.Response(
                body=rest_codec.encode_error(error.message),
                status=error.http_status,
                content_type=_JSON,
            )
        except TimeoutError:
            status = "DEADLINE_EXCEEDED"
            response = web.Response(
                body=rest_codec.encode_error("Deadline Exceeded"), status=504, content_type=_JSON
            )
        if self._metrics is not None:
            self._metrics.record_request(
                model_name, api, "REST", status, time.perf_counter() - start
            )
        return response

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        length = request.content_length
        if length is not None and length > self._max_body_bytes:
            raise self._too_large(length)
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise self._too_large(None) from None

    def _too_large(self, length: int | None) -> ServingError:
        size = f"of {length} bytes " if length is not None else ""
        return resource_exhausted(
            f"Request body {size}exceeds the limit of {self._max_body_bytes} bytes "
            "(--rest_api_max_body_bytes)"
        )

    async def _dispatch(self, spec: ModelSpec, api: str, body: bytes) -> bytes:
        if api in ("status", "metadata"):
            if not spec.name:
                raise invalid_argument("Missing model name in request.")
            return self._status(spec) if api == "status" else self._metadata(spec)
        doc = rest_codec.parse_json(body)
        signature_name = rest_codec.signature_name_of(doc)
        if api == "predict":
            return await self._predict(spec, doc, signature_name)
        request_input = rest_codec.decode_examples_request(doc)
        with self._service.acquired(spec) as model:
            if api == "classify":
                answer = await self._service.classify(model, signature_name, request_input)
                return rest_codec.encode_classification_result(answer.result)
            answer = await self._service.regress(model, signature_name, request_input)
            return rest_codec.encode_regression_result(answer.result)

    async def _predict(self, spec: ModelSpec, doc: dict, signature_name: str) -> bytes:
        with self._service.acquired(spec) as model:
            signature = inference.predict_signature(model, signature_name, rest=True)
            inputs, fmt = rest_codec.decode_predict_request(
                doc, signature.inputs, frozenset(signature.defaults)
            )
            prediction = await self._service.predict(model, signature, inputs)
        return rest_codec.encode_predict_response(prediction.outputs, fmt)

    def _status(self, spec: ModelSpec) -> bytes:
        response = responses.status_response(self._service.status(spec))
        return json_format.MessageToJson(
            response, including_default_value_fields=True, indent=1
        ).encode()

    def _metadata(self, spec: ModelSpec) -> bytes:
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            metadata_field=[responses.SIGNATURE_DEF_FIELD]
        )
        request.model_spec.name = spec.name
        if spec.version is not None:
            request.model_spec.version.value = spec.version
        if spec.label:
            request.model_spec.version_label = spec.label
        response = responses.metadata_response(self._service, request)
        signature_def_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[responses.SIGNATURE_DEF_FIELD].Unpack(signature_def_map)

        def to_json(message) -> str:
            return json_format.MessageToJson(
                message,
                including_default_value_fields=True,
                preserving_proto_field_name=True,
                indent=1,
            )

        return (
            '{\n"model_spec":' + to_json(response.model_spec) + ',\n"metadata": '
            '{"signature_def": ' + to_json(signature_def_map) + "}\n}\n"
        ).encode()


class _JsonErrorHandler(web.RequestHandler):
    """Answers what aiohttp rejects before :meth:`RestApi.handle` runs (a request line or header
    over its limits, a malformed request) with an ``{"error": ...}`` body like every other
    error, instead of aiohttp's plain text."""

    def handle_error(self, request, status=500, exc=None, message=None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if already sent
        if isinstance(exc, LineTooLong):
            text = f"Request line or header exceeds the limit of {exc.args[1]} bytes"
        elif status == 500:
            text = "Internal error"
        else:
            text = f"Malformed HTTP request: {getattr(exc, 'message', message)}"
        response = web.Response(
            status=status, body=rest_codec.encode_error(text), content_type=_JSON
        )
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    # aiohttp builds its RequestHandler here; this is the one place to swap in ours.
    def __call__(self) -> web.RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)
