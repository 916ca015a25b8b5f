"""Property-based fuzzing (hypothesis) of the REST codec and of TensorProto decoding.

Each property runs a fixed, derandomized number of examples, so CI time is bounded and a
failure reproduces. In-process properties call the pure decoders on many inputs; server
properties send fewer through the real ports and, after every case, check that the server still
answers a valid request with the same prediction and that the process's memory stays bounded.
"""

from __future__ import annotations

import http.client
import json
import os

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from skewless.serving import rest_codec, tensors
from skewless.serving.errors import ServingError
from tests.serving import example_models
from tests.serving.conftest import CLIENT_TIMEOUT, predict_request

pytestmark = pytest.mark.e2e

FEATURES = list(example_models.TAXI_FEATURES)
ROWS = example_models.taxi_rows(2, seed=9)
RSS_GROWTH_LIMIT_MB = 300


def fuzz_settings(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large])


# -- strategies ---------------------------------------------------------------------------------

_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.fixed_dictionaries({"b64": st.text(max_size=8)}),
)
json_value = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(FEATURES + ["b64", "x"]) | st.text(max_size=3), inner, max_size=3),
    max_leaves=16,
)
_row = st.fixed_dictionaries({}, optional={f: json_value for f in FEATURES + ["extra"]})
_valid_row = st.sampled_from(example_models.taxi_rows(8, seed=1))
json_document = st.one_of(
    st.fixed_dictionaries({"instances": st.lists(_valid_row | _row | json_value, max_size=3)}),
    st.fixed_dictionaries({"inputs": st.dictionaries(st.sampled_from(FEATURES), json_value)
                           | json_value}),
    st.fixed_dictionaries({"signature_name": json_value, "instances": st.just(ROWS)}),
    st.fixed_dictionaries({"examples": st.lists(_row | json_value, max_size=3)},
                          optional={"context": json_value}),
    json_value,
)
_valid_body = json.dumps({"instances": ROWS}).encode()
_mutated_body = st.lists(
    st.tuples(st.integers(0, len(_valid_body) - 1), st.binary(min_size=0, max_size=3)),
    min_size=1, max_size=4,
).map(lambda edits: _apply(_valid_body, edits))
request_body = st.one_of(
    json_document.map(lambda d: json.dumps(d).encode()),
    _mutated_body,
    st.binary(max_size=64),
    st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
)


def _apply(body: bytes, edits) -> bytes:
    for position, replacement in edits:
        body = body[:position] + replacement + body[position + 1:]
    return body


_dims = st.lists(
    st.one_of(st.integers(-3, 5), st.sampled_from([10**6, 10**12, 2**62, -(2**62)])),
    max_size=5,
)
tensor_proto = st.builds(
    lambda dtype, dims, content, floats, ints, int64s, strings, bools: tensor_pb2.TensorProto(
        dtype=dtype,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]),
        tensor_content=content, float_val=floats, double_val=floats, int_val=ints,
        half_val=[i & 0xFFFF for i in ints], int64_val=int64s, string_val=strings,
        bool_val=bools, uint32_val=[abs(i) for i in ints], uint64_val=[abs(i) for i in int64s],
    ),
    st.sampled_from(sorted(types_pb2.DataType.values())) | st.integers(-2, 300),
    _dims,
    st.binary(max_size=48) | st.just(b""),
    st.lists(st.floats(width=32, allow_nan=True), max_size=6),
    st.lists(st.integers(-(2**31), 2**31 - 1), max_size=6),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=6),
    st.lists(st.binary(max_size=4), max_size=6),
    st.lists(st.booleans(), max_size=6),
)


# -- in-process: the pure decoders --------------------------------------------------------------


@pytest.fixture(scope="module")
def taxi_signature(models):
    from skewless.serving.servable import LoadedModel

    model = LoadedModel.load("taxi", 1, models.taxi_v1)
    yield model.signatures["serving_default"]
    model.close()


@fuzz_settings(600)
@given(body=request_body)
def test_rest_codec_raises_only_serving_errors(taxi_signature, body):
    try:
        doc = rest_codec.parse_json(body)
        rest_codec.signature_name_of(doc)
        inputs, _ = rest_codec.decode_predict_request(doc, taxi_signature.inputs)
    except ServingError as error:
        assert error.http_status == 400 and error.message
        return
    for alias, array in inputs.items():
        assert array.dtype == taxi_signature.inputs[alias].dtype


@fuzz_settings(600)
@given(proto=tensor_proto)
def test_tensor_decoding_raises_only_invalid_argument(proto):
    try:
        array = tensors.to_ndarray(proto, "x")
    except ServingError as error:
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.message.startswith(("tensor parsing error: x", "Unsupported tensor dtype"))
        return
    assert array.shape == tuple(d.size for d in proto.tensor_shape.dim)
    assert array.size <= max(tensors.MAX_FILLED_ELEMENTS, len(proto.tensor_content))


# -- through the server -------------------------------------------------------------------------


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _post(port: int, path: str, body: bytes) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
    try:
        connection.request("POST", path, body=body)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


class Baseline:
    """A valid request's answer and the memory before fuzzing, checked after every case."""

    def __init__(self, server, stub) -> None:
        self.server, self.stub = server, stub
        self.rest_answer = self._rest()
        self.grpc_answer = self._grpc()
        self.rss_mb = _rss_mb()

    def _rest(self) -> bytes:
        status, _, body = _post(self.server.rest_port, "/v1/models/taxi:predict", _valid_body)
        assert status == 200
        return body

    def _grpc(self) -> list[float]:
        response = self.stub.Predict(predict_request(rows=ROWS), timeout=CLIENT_TIMEOUT)
        return tensors.to_ndarray(response.outputs["probabilities"]).ravel().tolist()

    def check(self) -> None:
        assert self._rest() == self.rest_answer
        assert self._grpc() == self.grpc_answer
        assert _rss_mb() - self.rss_mb < RSS_GROWTH_LIMIT_MB


@pytest.fixture(scope="module")
def baseline(taxi_server):
    channel = grpc.insecure_channel(f"127.0.0.1:{taxi_server.grpc_port}")
    yield Baseline(taxi_server, prediction_service_pb2_grpc.PredictionServiceStub(channel))
    channel.close()


@fuzz_settings(150)
@given(body=request_body, verb=st.sampled_from(["predict", "classify", "regress"]))
def test_rest_server_answers_fuzzed_bodies_with_json_and_keeps_serving(baseline, body, verb):
    status, content_type, answer = _post(
        baseline.server.rest_port, f"/v1/models/taxi:{verb}", body)
    assert status < 500, answer
    assert content_type == "application/json"
    parsed = json.loads(answer)
    assert ("error" in parsed) == (status != 200)
    baseline.check()


@fuzz_settings(150)
@given(proto=tensor_proto, alias=st.sampled_from(FEATURES + ["extra"]))
def test_grpc_server_answers_fuzzed_tensors_and_keeps_serving(baseline, proto, alias):
    request = predict_request(rows=ROWS)
    request.inputs[alias].CopyFrom(proto)
    try:
        response = baseline.stub.Predict(request, timeout=CLIENT_TIMEOUT)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    else:
        assert "probabilities" in response.outputs
    baseline.check()
