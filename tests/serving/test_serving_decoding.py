"""Requests an attacker would send: each gets TF Serving's 400 / INVALID_ARGUMENT naming the
problem, never a 5xx, UNKNOWN, a hang or a huge allocation."""

from __future__ import annotations

import http.client
import json
import os
import socket

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from skewless.serving import tensors
from tests.serving import example_models
from tests.serving.conftest import CLIENT_TIMEOUT, predict_request

pytestmark = pytest.mark.e2e

ROWS = example_models.taxi_rows(3, seed=1)
# Default limits (64 MB REST bodies, 256 MB gRPC messages): the server's own checks must hold.
DEFAULT_LIMITS_MB = 256


@pytest.fixture(scope="module")
def server(taxi_server):
    return taxi_server


def rest(server, path: str, body: bytes, method: str = "POST") -> tuple[int, str, dict | str]:
    """One HTTP request: (status, content type, parsed JSON body or text)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=CLIENT_TIMEOUT)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    content_type = response.getheader("Content-Type", "")
    try:
        return response.status, content_type, json.loads(data)
    except ValueError:
        return response.status, content_type, data.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def stub(server):
    limit = DEFAULT_LIMITS_MB * 1024 * 1024
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}",
                                    options=[("grpc.max_send_message_length", limit)])
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def predict_error(stub, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=CLIENT_TIMEOUT)
    return info.value


def _row_body(trip_miles_json: str) -> bytes:
    row = dict(ROWS[0])
    row["trip_miles"] = "@"
    return json.dumps({"instances": [row]}).replace('"@"', trip_miles_json).encode()


# -- REST ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000,
         "JSON Parse error: Nesting deeper than 1024 levels at offset: 1025"),
        # NaN makes the stdlib parser take over from orjson; it must stop just as cleanly.
        (b'{"x": NaN, "y": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
         "JSON Parse error: Nesting deeper than 1024 levels"),
        (_row_body("[" * 40 + "1" + "]" * 40),
         "nests lists 40 deep: a tensor has at most 31 dimensions here"),
        (_row_body("1e400"),
         "JSON Parse error: Number too big to be stored in double. at offset: "),
        (_row_body("-" + "9" * 5000), "JSON Parse error: Number too big to be stored in double."),
        # Deep enough for the error message's JSON echo to overflow Python's stack.
        (b'{"instances": 5, "x": ' + b"[" * 1000 + b"]" * 1000 + b"}",
         "JSON Value: <a value nested too deeply to show> Excepting 'instances' to be an "
         "list/array"),
    ],
    ids=["nested-100k", "nested-after-nan", "rank-40", "1e400", "5000-digits", "echo-too-deep"],
)
def test_rest_malformed_bodies_get_400_naming_the_problem(server, body, message):
    status, content_type, answer = rest(server, "/v1/models/taxi:predict", body)
    assert (status, content_type) == (400, "application/json")
    assert message in answer["error"]


def test_rest_1e400_offset_points_at_the_number(server):
    body = _row_body("1e400")
    status, _, answer = rest(server, "/v1/models/taxi:predict", body)
    assert status == 400
    offset = int(answer["error"].rsplit(" ", 1)[1])
    assert body[offset:offset + 5] == b"1e400"


def test_rest_long_model_name_is_a_json_not_found(server):
    name = "m" * 6000
    status, content_type, answer = rest(server, f"/v1/models/{name}:predict",
                                        json.dumps({"instances": ROWS}).encode())
    assert (status, content_type) == (404, "application/json")
    assert answer["error"] == f"Servable not found for request: Latest({name})"


def test_rest_over_long_url_is_a_json_400_not_aiohttp_text(server):
    status, content_type, answer = rest(server, "/v1/models/" + "m" * 20_000, b"", "GET")
    assert (status, content_type) == (400, "application/json")
    assert answer == {"error": "Request line or header exceeds the limit of 8190 bytes"}


def test_rest_millions_of_empty_strings_are_refused(server):
    columns = {k: v.tolist() for k, v in example_models.taxi_columns(ROWS[:1]).items()}
    columns["company"] = [""] * 1_100_000
    columns["payment_type"] = [b"Cash"]
    body = json.dumps({"inputs": {k: [v.decode() if isinstance(v, bytes) else v for v in vs]
                                  for k, vs in columns.items()}}).encode()
    status, _, answer = rest(server, "/v1/models/taxi:predict", body)
    assert status == 400
    assert answer["error"] == "A string tensor of 1100000 elements exceeds the limit of 1048576"


# -- gRPC TensorProto ---------------------------------------------------------------------------


def _with_input(name: str, proto: tensor_pb2.TensorProto) -> predict_pb2.PredictRequest:
    request = predict_request(rows=ROWS)
    request.inputs[name].CopyFrom(proto)
    return request


def _tensor(dtype: int, dims: list[int], **fields) -> tensor_pb2.TensorProto:
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, **fields)


@pytest.mark.parametrize(
    ("name", "proto", "message"),
    [
        ("trip_miles", _tensor(types_pb2.DT_FLOAT, [3], tensor_content=b"\0" * 7),
         "tensor parsing error: trip_miles: tensor_content has 7 bytes, shape [3] of float "
         "needs 12"),
        ("trip_miles", _tensor(types_pb2.DT_FLOAT, [10**12]),
         "tensor parsing error: trip_miles: shape [1000000000000] promises 1000000000000 "
         "elements but the request carries 0 (filling more than 1048576 is refused)"),
        ("trip_miles", _tensor(types_pb2.DT_FLOAT, [10**6, 10**6, 10**6, 10**6, 10**6],
                               tensor_content=b"\0" * 4),
         "tensor parsing error: trip_miles: shape [1000000,1000000,1000000,1000000,1000000] has "
         "more than 2^63-1 elements"),
        ("trip_miles", _tensor(types_pb2.DT_FLOAT, [-5], float_val=[1.0]),
         "tensor parsing error: trip_miles: negative dimension in shape [-5]"),
        ("company", _tensor(types_pb2.DT_STRING, [2_000_000], string_val=[b""] * 2_000_000),
         "tensor parsing error: company: 2000000 string elements exceed the limit of 1048576"),
        ("trip_miles", _tensor(types_pb2.DT_FLOAT, [1] * 40, float_val=[1.0]),
         "tensor parsing error: trip_miles: rank 40 exceeds the limit of 32"),
        ("trip_miles", _tensor(types_pb2.DT_FLOAT, [0, 2**62]),
         "tensor parsing error: trip_miles: shape [0,4611686018427387904] spans more than "
         "2^63-1 bytes"),
    ],
    ids=["content-length", "dim-1e12", "int64-overflow", "negative-dim", "2M-empty-strings",
         "rank-40", "empty-but-huge"],
)
def test_grpc_malformed_tensors_get_invalid_argument(stub, name, proto, message):
    error = predict_error(stub, _with_input(name, proto))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == message


def test_malformed_requests_leave_the_server_answering_the_same(server, stub):
    before = stub.Predict(predict_request(rows=ROWS), timeout=CLIENT_TIMEOUT)
    predict_error(stub, _with_input("trip_miles", _tensor(types_pb2.DT_FLOAT, [10**12])))
    rest(server, "/v1/models/taxi:predict", b"[" * 100_000)
    after = stub.Predict(predict_request(rows=ROWS), timeout=CLIENT_TIMEOUT)
    assert tensors.to_ndarray(after.outputs["probabilities"]).tolist() == (
        tensors.to_ndarray(before.outputs["probabilities"]).tolist())


def test_the_rest_port_answers_raw_garbage_with_json(server):
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=CLIENT_TIMEOUT) as s:
        s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        reply = s.recv(65536)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"400"
    assert json.loads(body)["error"].startswith("Malformed HTTP request: ")


def test_a_tensor_of_few_values_is_still_filled_as_tensorflow_does():
    proto = _tensor(types_pb2.DT_FLOAT, [2, 3], float_val=[1.0, 2.0])
    assert tensors.to_ndarray(proto, "x").tolist() == [[1, 2, 2], [2, 2, 2]]
    assert np.array_equal(tensors.to_ndarray(_tensor(types_pb2.DT_INT64, [4]), "x"), [0] * 4)


def test_the_process_memory_stays_bounded(server, stub):
    def rss_mb() -> float:
        with open(f"/proc/{os.getpid()}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    before = rss_mb()
    for _ in range(3):
        predict_error(stub, _with_input("trip_miles", _tensor(types_pb2.DT_FLOAT, [10**12])))
        predict_error(stub, _with_input("trip_miles", _tensor(types_pb2.DT_DOUBLE, [10**9, 10])))
    assert rss_mb() - before < 100
