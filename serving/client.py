"""REST and gRPC clients with the same methods: predict on raw feature rows, metadata, status.

Both take rows as dicts of raw feature values and return named numpy outputs; both retry on
UNAVAILABLE (HTTP 503, connection refused) with exponential backoff, and raise
:class:`~skewless.serving.errors.ServingError` with the server's code and message otherwise.
The signature's input dtypes come from the model's metadata, fetched once and cached.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import grpc
import numpy as np
import orjson
from google.protobuf import json_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from skewless.serving import tensors
from skewless.serving.errors import HTTP_STATUS_BY_CODE, ServingError

_T = TypeVar("_T")
_CODE_BY_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
    501: grpc.StatusCode.UNIMPLEMENTED,
}
_CODE_BY_HTTP.update({h: c for c, h in HTTP_STATUS_BY_CODE.items() if h not in _CODE_BY_HTTP})


def rows_to_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """Turns feature rows into one list of values per feature.

    Raises:
        ValueError: The rows are empty or do not all have the same features.
    """
    if not rows:
        raise ValueError("no rows to predict on")
    names = list(rows[0])
    for index, row in enumerate(rows):
        if set(row) != set(names):
            raise ValueError(f"row {index} has features {sorted(row)}, expected {sorted(names)}")
    return {name: [row[name] for row in rows] for name in names}


def rows_to_arrays(
    rows: Sequence[Mapping[str, Any]], dtypes: Mapping[str, np.dtype]
) -> dict[str, np.ndarray]:
    """One array per feature, in the signature's dtype where it has the feature (strings as
    bytes in object arrays, as TensorFlow holds them).

    Raises:
        ValueError: The rows are empty or do not all have the same features.
    """
    arrays = {}
    for name, values in rows_to_columns(rows).items():
        dtype = dtypes.get(name)
        if dtype is not None and dtype.kind == "O":
            array = np.empty(len(values), dtype=object)
            array[:] = [v.encode() if isinstance(v, str) else v for v in values]
        else:
            array = np.asarray(values, dtype=dtype)
        arrays[name] = array
    return arrays


def _with_retries(call: Callable[[], _T], retries: int, backoff: float) -> _T:
    for attempt in range(retries + 1):
        try:
            return call()
        except ServingError as error:
            if error.code != grpc.StatusCode.UNAVAILABLE or attempt == retries:
                raise
        time.sleep(backoff * (2**attempt))
    raise AssertionError("unreachable")


def _signature_inputs(
    metadata: Mapping[str, Any], signature_name: str
) -> tuple[dict[str, str], dict[str, str]]:
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    key = signature_name or "serving_default"
    if key not in signatures:
        raise ServingError(
            grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.'
        )
    signature = signatures[key]
    return (
        {alias: info["dtype"] for alias, info in signature.get("inputs", {}).items()},
        {alias: info["dtype"] for alias, info in sorted(signature.get("outputs", {}).items())},
    )



def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v) for v in value)
    return False


def encode_json(body: Any) -> bytes:
    """A request body; NaN and ±Infinity as the literals TF Serving's JSON accepts.

    orjson would write them as null, which TF Serving rejects for a float input, so a body holding
    one is encoded by the standard library instead.
    """
    if _has_non_finite(body):
        return json.dumps(body, allow_nan=True, separators=(",", ":")).encode()
    return orjson.dumps(body)

class RestClient:
    """A client of the REST API.

    Args:
        host: Server host.
        port: REST port.
        timeout: Seconds per attempt.
        retries: Extra attempts after an UNAVAILABLE answer or a refused connection.
        backoff: Seconds before the first retry; doubles each time.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8501,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.05,
    ) -> None:
        self.host, self.port = host, port
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._local = threading.local()
        self._metadata: dict[tuple, dict] = {}

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.connection = connection
        return connection

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Sends one request (with retries) and returns the decoded JSON answer.

        Raises:
            ServingError: The server's error, or UNAVAILABLE / DEADLINE_EXCEEDED.
        """
        payload = encode_json(body) if body is not None else None
        return _with_retries(lambda: self._send(method, path, payload), self.retries,
                             self.backoff)

    def _send(self, method: str, path: str, payload: bytes | None) -> Any:
        connection = self._connection()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except TimeoutError:
            connection.close()
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        except (ConnectionError, http.client.HTTPException, OSError) as error:
            connection.close()
            raise ServingError(grpc.StatusCode.UNAVAILABLE, f"REST connection: {error}") from None
        if response.status == 200:
            return orjson.loads(data)
        try:
            message = orjson.loads(data)["error"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            message = data.decode("utf-8", "replace") or response.reason
        code = _CODE_BY_HTTP.get(response.status, grpc.StatusCode.UNKNOWN)
        raise ServingError(code, message)

    @staticmethod
    def _model_path(model: str, version: int | None, label: str | None) -> str:
        path = f"/v1/models/{quote(model, safe='')}"
        if version is not None:
            path += f"/versions/{int(version)}"
        elif label:
            path += f"/labels/{quote(label, safe='')}"
        return path

    def metadata(self, model: str, *, version: int | None = None, label: str | None = None):
        """The model's metadata (signatures) as TF Serving's JSON.

        Raises:
            ServingError: The server's error.
        """
        return self.request("GET", self._model_path(model, version, label) + "/metadata")

    def status(self, model: str, *, version: int | None = None, label: str | None = None):
        """The model's version states: a list of ``{"version", "state", "status"}``.

        Raises:
            ServingError: The server's error.
        """
        answer = self.request("GET", self._model_path(model, version, label))
        return answer["model_version_status"]

    def _signature(self, model, version, label, signature_name):
        key = (model, version, label, signature_name)
        if key not in self._metadata:
            self._metadata[key] = _signature_inputs(
                self.metadata(model, version=version, label=label), signature_name
            )
        return self._metadata[key]

    def predict(
        self,
        model: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str = "",
    ) -> dict[str, np.ndarray]:
        """Predicts on raw feature rows.

        Args:
            model: The model name.
            rows: One dict of raw feature values per row; bytes values are sent as base64.
            version: A specific version, or None for the latest.
            label: A version label instead of a version.
            signature_name: The signature ("" for ``serving_default``).

        Returns:
            Output name to numpy array (one entry per row along axis 0).

        Raises:
            ServingError: The server's error.
        """
        _, output_dtypes = self._signature(model, version, label, signature_name)
        columns = {
            name: [{"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v
                   for v in values]
            for name, values in rows_to_columns(rows).items()
        }
        body: dict[str, Any] = {"inputs": columns}
        if signature_name:
            body["signature_name"] = signature_name
        outputs = self.request("POST", self._model_path(model, version, label) + ":predict",
                               body)["outputs"]
        if not isinstance(outputs, dict):
            outputs = {next(iter(output_dtypes)): outputs}
        return {name: _to_array(values, output_dtypes.get(name, ""))
                for name, values in outputs.items()}

    def close(self) -> None:
        """Closes this thread's connection."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _to_array(values: Any, dtype_name: str) -> np.ndarray:
    """A JSON output as numpy, in the signature's dtype (e.g. ``DT_FLOAT`` -> float32)."""
    try:
        dtype = tensors.numpy_dtype(types_pb2.DataType.Value(dtype_name))
    except (ValueError, ServingError):
        dtype = None
    if dtype is not None and dtype.kind == "O":
        array = np.empty(len(values), dtype=object) if isinstance(values, list) else None
        if array is not None and all(isinstance(v, str) for v in values):
            array[:] = [v.encode() for v in values]
            return array
        return np.asarray(values, dtype=object)
    return np.asarray(values, dtype=dtype)


class GrpcClient:
    """A client of the gRPC API, with the same methods as :class:`RestClient`.

    Args:
        host: Server host.
        port: gRPC port.
        timeout: Seconds per attempt (the call deadline).
        retries: Extra attempts after UNAVAILABLE.
        backoff: Seconds before the first retry; doubles each time.
        max_message_bytes: Largest message sent or received.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8500,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.05,
        max_message_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._channel = grpc.insecure_channel(
            f"{host}:{port}",
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._signatures: dict[tuple, tuple[dict[str, int], list[str]]] = {}

    def call(self, method: Callable[..., _T], request: Any) -> _T:
        """Calls one RPC with the deadline and retries.

        Raises:
            ServingError: The RPC's status code and details.
        """

        def attempt() -> _T:
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as error:
                raise ServingError(error.code(), error.details() or "") from None

        return _with_retries(attempt, self.retries, self.backoff)

    @staticmethod
    def _spec(spec, model: str, version: int | None, label: str | None, signature: str = ""):
        spec.name = model
        if version is not None:
            spec.version.value = int(version)
        elif label:
            spec.version_label = label
        if signature:
            spec.signature_name = signature

    def metadata(self, model: str, *, version: int | None = None, label: str | None = None):
        """The model's metadata, as the same JSON shape the REST API answers.

        Raises:
            ServingError: The server's error.
        """
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, model, version, label)
        response = self.call(self._prediction.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        as_json = lambda m: json_format.MessageToDict(  # noqa: E731
            m, preserving_proto_field_name=True, including_default_value_fields=True
        )
        return {
            "model_spec": as_json(response.model_spec),
            "metadata": {"signature_def": as_json(signature_map)},
        }

    def status(self, model: str, *, version: int | None = None, label: str | None = None):
        """The model's version states, as the same JSON shape the REST API answers.

        Raises:
            ServingError: The server's error.
        """
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, model, version, label)
        response = self.call(self._models.GetModelStatus, request)
        return json_format.MessageToDict(response, including_default_value_fields=True)[
            "model_version_status"
        ]

    def _signature(self, model, version, label, signature_name):
        key = (model, version, label, signature_name)
        if key not in self._signatures:
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                metadata_field=["signature_def"]
            )
            self._spec(request.model_spec, model, version, label)
            response = self.call(self._prediction.GetModelMetadata, request)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signature_map)
            name = signature_name or "serving_default"
            if name not in signature_map.signature_def:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f'Serving signature key "{name}" not found.',
                )
            signature = signature_map.signature_def[name]
            self._signatures[key] = (
                {alias: info.dtype for alias, info in signature.inputs.items()},
                sorted(signature.outputs),
            )
        return self._signatures[key]

    def predict(
        self,
        model: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str = "",
    ) -> dict[str, np.ndarray]:
        """Predicts on raw feature rows (values are cast to the signature's dtypes).

        Args:
            model: The model name.
            rows: One dict of raw feature values per row.
            version: A specific version, or None for the latest.
            label: A version label instead of a version.
            signature_name: The signature ("" for ``serving_default``).

        Returns:
            Output name to numpy array.

        Raises:
            ServingError: The server's error.
        """
        response = self.call(self._prediction.Predict, self.predict_request(
            model, rows, version=version, label=label, signature_name=signature_name))
        return {a: tensors.to_ndarray(proto, a) for a, proto in response.outputs.items()}

    def predict_request(
        self,
        model: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str = "",
    ) -> predict_pb2.PredictRequest:
        """The PredictRequest :meth:`predict` sends (values cast to the signature's dtypes).

        Raises:
            ServingError: The metadata request failed or the signature does not exist.
        """
        dtypes, _ = self._signature(model, version, label, signature_name)
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, model, version, label, signature_name)
        arrays = rows_to_arrays(rows, {a: tensors.numpy_dtype(d) for a, d in dtypes.items()})
        for name, array in arrays.items():
            request.inputs[name].CopyFrom(tensors.to_tensor_proto(array))
        return request

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
