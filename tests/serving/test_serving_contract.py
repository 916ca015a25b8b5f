"""Contract tests: every endpoint, format and error of the REST and gRPC APIs, on a live server."""

from __future__ import annotations

import base64
import http.client
import json
import math

import grpc
import numpy as np
import pytest
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from skewless.serving import tensors
from tests.serving import example_models
from tests.serving.conftest import CLIENT_TIMEOUT, MAX_BODY_BYTES, predict_request

pytestmark = pytest.mark.e2e

ROWS = example_models.taxi_rows(3, seed=1)


def http_call(server, method: str, path: str, body=None, raw: bytes | None = None):
    """One HTTP request; returns (status, parsed JSON or raw text)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port,
                                            timeout=CLIENT_TIMEOUT)
    try:
        payload = raw if raw is not None else (
            json.dumps(body).encode() if body is not None else None)
        connection.request(method, path, body=payload)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, data.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def stubs(contract_server):
    channel = grpc.insecure_channel(
        f"127.0.0.1:{contract_server.grpc_port}",
        options=[("grpc.max_send_message_length", 4 * MAX_BODY_BYTES)],
    )
    yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
           model_service_pb2_grpc.ModelServiceStub(channel))
    channel.close()


def rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=CLIENT_TIMEOUT)
    return info.value


# -- REST: successful calls ----------------------------------------------------------------------


def test_rest_predict_row_and_columnar_formats(contract_server):
    status, row = http_call(contract_server, "POST", "/v1/models/taxi:predict",
                            {"instances": ROWS})
    assert status == 200 and len(row["predictions"]) == 3
    assert set(row["predictions"][0]) == {"classes", "probabilities"}
    columns = {k: [r[k] for r in ROWS] for k in ROWS[0]}
    status, col = http_call(contract_server, "POST", "/v1/models/taxi:predict",
                            {"inputs": columns})
    assert status == 200
    assert col["outputs"]["probabilities"] == [p["probabilities"] for p in row["predictions"]]
    assert col["outputs"]["classes"] == [p["classes"] for p in row["predictions"]]


def test_rest_versions_and_labels_address_different_models(contract_server):
    def probabilities(path):
        status, body = http_call(contract_server, "POST", path, {"instances": ROWS[:1]})
        assert status == 200, body
        return body["predictions"][0]["probabilities"]

    stable = probabilities("/v1/models/multi/labels/stable:predict")
    canary = probabilities("/v1/models/multi/labels/canary:predict")
    assert stable == probabilities("/v1/models/multi/versions/1:predict")
    assert canary == probabilities("/v1/models/multi/versions/2:predict")
    assert canary == probabilities("/v1/models/multi:predict")  # latest
    assert stable != canary


def test_rest_signature_name_and_b64_bytes(contract_server):
    example = example_pb2.Example()
    for name, value in ROWS[0].items():
        feature = example.features.feature[name]
        if isinstance(value, str):
            feature.bytes_list.value.append(value.encode())
        elif isinstance(value, int):
            feature.int64_list.value.append(value)
        else:
            feature.float_list.value.append(value)
    b64 = base64.b64encode(example.SerializeToString()).decode()
    status, body = http_call(contract_server, "POST", "/v1/models/taxi:predict",
                             {"signature_name": "serving_tf_example",
                              "instances": [{"b64": b64}]})
    assert status == 200, body
    _, raw = http_call(contract_server, "POST", "/v1/models/taxi:predict",
                       {"instances": ROWS[:1]})
    assert body["predictions"][0]["probabilities"] == pytest.approx(
        raw["predictions"][0]["probabilities"], abs=1e-6)


def test_rest_nan_and_infinity(contract_server):
    row = dict(ROWS[0], fare=float("nan"))
    payload = json.dumps({"instances": [row]}).encode()  # Python writes NaN, like TF Serving
    status, body = http_call(contract_server, "POST", "/v1/models/taxi:predict", raw=payload)
    assert status == 200
    assert math.isnan(body["predictions"][0]["probabilities"])


def test_rest_classify_and_regress(contract_server):
    status, body = http_call(contract_server, "POST", "/v1/models/classifier:classify",
                             {"examples": [{"x": 0.0}, {"x": 2.0}]})
    assert status == 200
    assert body["results"][0] == [["neg", 0.5], ["pos", 0.5]]
    assert body["results"][1][1][0] == "pos"
    assert body["results"][1][1][1] == pytest.approx(1 / (1 + math.exp(-2)), abs=1e-6)
    status, body = http_call(contract_server, "POST", "/v1/models/classifier:regress",
                             {"signature_name": "regress_x", "examples": [{"x": 1.5}],
                              "context": {"unused": "c"}})
    assert (status, body) == (200, {"results": [4.0]})


def test_rest_signature_defaults(contract_server):
    status, body = http_call(contract_server, "POST", "/v1/models/classifier:predict",
                             {"signature_name": "scaled", "instances": [{"a": 1.5}, {"a": 2}]})
    assert (status, body) == (200, {"predictions": [3.0, 4.0]})
    status, body = http_call(contract_server, "POST", "/v1/models/classifier:predict",
                             {"signature_name": "scaled", "inputs": {"a": [1.5], "scale": 3}})
    assert (status, body) == (200, {"outputs": [4.5]})


def test_rest_status_and_metadata(contract_server):
    status, body = http_call(contract_server, "GET", "/v1/models/taxi")
    assert status == 200
    assert body == {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {
        "error_code": "OK", "error_message": ""}}]}
    status, body = http_call(contract_server, "GET", "/v1/models/multi/labels/canary")
    assert status == 200 and [s["version"] for s in body["model_version_status"]] == ["2"]
    status, body = http_call(contract_server, "GET", "/v1/models/multi")
    assert [s["version"] for s in body["model_version_status"]] == ["2", "1"]
    status, body = http_call(contract_server, "GET", "/v1/models/multi/versions/1/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "multi", "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"]["fare"]["dtype"] == "DT_FLOAT"
    assert signature["inputs"]["trip_start_hour"]["dtype"] == "DT_INT64"


# -- REST: errors --------------------------------------------------------------------------------

GOOD_ROW = ROWS[0]


@pytest.mark.parametrize(
    "method, path, body, status, message",
    [
        ("POST", "/v1/models/taxi:predict", b"{not json", 400, "JSON Parse error: "),
        ("POST", "/v1/models/taxi:predict", {"instances": [dict(GOOD_ROW, fare="ten")]}, 400,
         'JSON Value: "ten" Type: String is not of expected type: float'),
        ("POST", "/v1/models/taxi:predict", {"instances": [dict(GOOD_ROW, trip_start_hour=1.5)]},
         400, "is not of expected type: int64"),
        ("POST", "/v1/models/taxi:predict",
         {"instances": [{k: v for k, v in GOOD_ROW.items() if k != "company"}]}, 400,
         "keys must be equal to: company,fare,payment_type,trip_miles,trip_start_hour"),
        ("POST", "/v1/models/taxi:predict", {"instances": [dict(GOOD_ROW, tips=1.0)]}, 400,
         "does not have named input: tips"),
        ("POST", "/v1/models/taxi:predict",
         {"inputs": {k: [v] for k, v in GOOD_ROW.items() if k != "fare"}}, 400,
         "Missing named input: fare in 'inputs' object."),
        ("POST", "/v1/models/taxi:predict", {"signature_name": "nope", "instances": [GOOD_ROW]},
         400, 'Serving signature name: "nope" not found in signature def'),
        ("POST", "/v1/models/nope:predict", {"instances": [GOOD_ROW]}, 404,
         "Servable not found for request: Latest(nope)"),
        ("POST", "/v1/models/taxi/versions/7:predict", {"instances": [GOOD_ROW]}, 404,
         "Servable not found for request: Specific(taxi, 7)"),
        ("POST", "/v1/models/multi/labels/beta:predict", {"instances": [GOOD_ROW]}, 400,
         "Unrecognized servable version label: beta"),
        ("POST", "/v1/models/taxi:predict", {"instances": [GOOD_ROW], "inputs": {}}, 400,
         "expecting only one of 'inputs' or 'instances' keys to exist"),
        ("POST", "/v1/models/..%2F..%2Fetc%2Fpasswd:predict", {"instances": [GOOD_ROW]}, 404,
         "Servable not found for request: Latest(../../etc/passwd)"),
        ("POST", "/v1/models/multi/labels/..%2F1:predict", {"instances": [GOOD_ROW]}, 400,
         "Unrecognized servable version label: ../1"),
        ("GET", "/v1/models/..%2Ftaxi", None, 404, "Could not find any versions of model ../taxi"),
        ("GET", "/v1/models/taxi/versions/9", None, 404, "Could not find version 9 of model taxi"),
        ("GET", "/v1/models/nope/metadata", None, 404,
         "Servable not found for request: Latest(nope)"),
        ("GET", "/v1/models", None, 400, "Missing model name in request."),
        ("POST", "/v1/models/taxi:explain", {}, 400, "Malformed request: POST "
         "/v1/models/taxi:explain"),
        ("DELETE", "/v1/models/taxi", None, 400, "Malformed request: DELETE /v1/models/taxi"),
        ("POST", "/v1/models/taxi:classify", {"examples": [{"x": 1.0}]}, 400,
         "Expected classification signature method_name to be tensorflow/serving/classify. "
         "Was: tensorflow/serving/predict"),
        ("POST", "/v1/models/classifier:regress", {"examples": [{"x": 1.0}]}, 400,
         "Expected regression signature method_name to be tensorflow/serving/regress. "
         "Was: tensorflow/serving/classify"),
        ("POST", "/v1/models/classifier:classify", {"signature_name": "missing",
                                                   "examples": [{"x": 1.0}]}, 400,
         "No signature was found with the name: missing"),
        ("POST", "/v1/models/classifier:classify", {"instances": [1]}, 400,
         "key 'examples' is expected and was not found"),
        ("POST", "/v1/models/classifier:predict", {"signature_name": "scaled",
                                                  "instances": [{"a": True}]}, 400,
         "JSON Value: true Type: True is not of expected type: float"),
    ],
)
def test_rest_errors(contract_server, method, path, body, status, message):
    raw = body if isinstance(body, bytes) else None
    got_status, got = http_call(contract_server, method, path,
                                None if raw is not None else body, raw=raw)
    assert got_status == status
    assert set(got) == {"error"} and message in got["error"]


def test_rest_body_over_the_limit_is_rejected_and_the_server_keeps_serving(contract_server):
    big = {"instances": [GOOD_ROW] * (MAX_BODY_BYTES // 80 + 10)}
    status, body = http_call(contract_server, "POST", "/v1/models/taxi:predict", big)
    assert status == 429
    assert f"exceeds the limit of {MAX_BODY_BYTES} bytes" in body["error"]
    status, body = http_call(contract_server, "POST", "/v1/models/taxi:predict",
                             {"instances": [GOOD_ROW]})
    assert status == 200 and len(body["predictions"]) == 1


def test_paths_outside_the_api_are_not_found(contract_server):
    status, body = http_call(contract_server, "GET", "/v2/models/taxi")
    assert status == 404 and body == ""


def test_prometheus_metrics(contract_server):
    http_call(contract_server, "POST", "/v1/models/taxi:predict", {"instances": [GOOD_ROW]})
    http_call(contract_server, "POST", "/v1/models/nope:predict", {"instances": [GOOD_ROW]})
    status, text = http_call(contract_server, "GET", "/monitoring/prometheus/metrics")
    assert status == 200
    assert ('tensorflow:serving:request_count_total{API="predict",entrypoint="REST",'
            'model_name="taxi",status="OK"}') in text
    assert 'model_name="nope",status="NOT_FOUND"' in text
    assert ":tensorflow:serving:request_latency_bucket{" in text
    assert ":tensorflow:serving:batching_session:input_batch_size_bucket{" in text
    assert ":tensorflow:serving:batching_session:queuing_latency_bucket{" in text


# -- gRPC ----------------------------------------------------------------------------------------


def test_grpc_predict_reports_the_serving_version(stubs):
    prediction, _ = stubs
    response = prediction.Predict(predict_request(), timeout=CLIENT_TIMEOUT)
    assert response.model_spec.name == "taxi" and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    assert tensors.to_ndarray(response.outputs["probabilities"]).shape == (3,)
    assert response.outputs["classes"].dtype == 9  # DT_INT64
    labelled = prediction.Predict(predict_request("multi", version_label="stable"),
                                  timeout=CLIENT_TIMEOUT)
    assert labelled.model_spec.version.value == 1
    latest = prediction.Predict(predict_request("multi"), timeout=CLIENT_TIMEOUT)
    assert latest.model_spec.version.value == 2
    filtered = predict_request()
    filtered.output_filter.append("classes")
    assert list(prediction.Predict(filtered, timeout=CLIENT_TIMEOUT).outputs) == ["classes"]


def test_grpc_classify_and_regress(stubs):
    prediction, _ = stubs
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "classifier"
    for x in (0.0, 3.0):
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    result = prediction.Classify(request, timeout=CLIENT_TIMEOUT).result
    assert [c.label for c in result.classifications[0].classes] == ["neg", "pos"]
    assert result.classifications[0].classes[1].score == pytest.approx(0.5)
    assert result.classifications[1].classes[1].score == pytest.approx(1 / (1 + math.exp(-3)))
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "classifier"
    request.model_spec.signature_name = "regress_x"
    with_context = request.input.example_list_with_context
    with_context.context.features.feature["x"].float_list.value.append(5.0)
    with_context.examples.add()  # takes x from the context
    with_context.examples.add().features.feature["x"].float_list.value.append(1.0)
    response = prediction.Regress(request, timeout=CLIENT_TIMEOUT)
    assert [r.value for r in response.result.regressions] == [11.0, 3.0]
    assert response.model_spec.version.value == 1


def test_grpc_metadata_and_status(stubs):
    prediction, models = stubs
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "classifier"
    response = prediction.GetModelMetadata(request, timeout=CLIENT_TIMEOUT)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert signatures.signature_def["scaled"].defaults["scale"].float_val == [2.0]
    assert signatures.signature_def["classify_x"].method_name == "tensorflow/serving/classify"
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "multi"
    status = models.GetModelStatus(status_request, timeout=CLIENT_TIMEOUT)
    assert [(s.version, s.state) for s in status.model_version_status] == [
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]


def test_grpc_signature_defaults(stubs):
    prediction, _ = stubs
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "classifier"
    request.model_spec.signature_name = "scaled"
    request.inputs["a"].CopyFrom(tensors.to_tensor_proto(np.array([1.0, 4.0], np.float32)))
    response = prediction.Predict(request, timeout=CLIENT_TIMEOUT)
    assert tensors.to_ndarray(response.outputs["y"]).tolist() == [2.0, 8.0]


def _without(request: predict_pb2.PredictRequest, name: str) -> predict_pb2.PredictRequest:
    del request.inputs[name]
    return request


def _with_extra(request: predict_pb2.PredictRequest) -> predict_pb2.PredictRequest:
    request.inputs["tips"].CopyFrom(tensors.to_tensor_proto(np.array([1.0, 2.0, 3.0])))
    return request


def _wrong_dtype(request: predict_pb2.PredictRequest) -> predict_pb2.PredictRequest:
    request.inputs["fare"].CopyFrom(tensors.to_tensor_proto(np.array([b"a", b"b", b"c"],
                                                                     object)))
    return request


@pytest.mark.parametrize(
    "make_request, code, message",
    [
        (lambda: predict_request("nope"), grpc.StatusCode.NOT_FOUND,
         "Servable not found for request: Latest(nope)"),
        (lambda: predict_request(version=5), grpc.StatusCode.NOT_FOUND,
         "Servable not found for request: Specific(taxi, 5)"),
        (lambda: predict_request("multi", version_label="beta"),
         grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: beta"),
        (lambda: predict_request("../taxi"), grpc.StatusCode.NOT_FOUND,
         "Servable not found for request: Latest(../taxi)"),
        (lambda: predict_request(signature_name="nope"), grpc.StatusCode.FAILED_PRECONDITION,
         'Serving signature key "nope" not found.'),
        (lambda: _without(predict_request(), "fare"), grpc.StatusCode.INVALID_ARGUMENT,
         "Signature input alias: fare(feed name: serving_default_fare:0) not found in request "
         "and no default value provided."),
        (lambda: _with_extra(predict_request()), grpc.StatusCode.INVALID_ARGUMENT,
         "Inputs contains invalid name. Used request inputs: company,fare,payment_type,"
         "trip_miles,trip_start_hour, request input: company,fare,payment_type,tips,trip_miles,"
         "trip_start_hour"),
        (lambda: _wrong_dtype(predict_request()), grpc.StatusCode.INVALID_ARGUMENT,
         "Expects arg[1] to be float but string is provided"),
        (lambda: predict_request(rows=ROWS * 3000), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    ],
)
def test_grpc_predict_errors(stubs, make_request, code, message):
    prediction, _ = stubs
    error = rpc_error(prediction.Predict, make_request())
    assert error.code() == code
    assert message in error.details()


def test_grpc_other_errors(stubs):
    prediction, models = stubs
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "classifier"
    error = rpc_error(prediction.Classify, request)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                               "Input is empty.")
    error = rpc_error(prediction.MultiInference, inference_pb2.MultiInferenceRequest())
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["other"])
    metadata.model_spec.name = "taxi"
    error = rpc_error(prediction.GetModelMetadata, metadata)
    assert error.details() == "Metadata field other is not supported"
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "taxi"
    status.model_spec.version.value = 4
    error = rpc_error(models.GetModelStatus, status)
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND,
                                               "Could not find version 4 of model taxi")
    # ... and the server still answers.
    assert prediction.Predict(predict_request(), timeout=CLIENT_TIMEOUT).model_spec.version.value


# -- clients -------------------------------------------------------------------------------------


def test_clients_have_the_same_methods_and_answers(rest, grpc_client):
    by_rest = rest.predict("taxi", ROWS)
    by_grpc = grpc_client.predict("taxi", ROWS)
    assert set(by_rest) == set(by_grpc) == {"classes", "probabilities"}
    np.testing.assert_allclose(by_rest["probabilities"], by_grpc["probabilities"], atol=1e-6)
    assert rest.status("multi", label="stable") == grpc_client.status("multi", label="stable")
    assert rest.metadata("taxi")["model_spec"] == grpc_client.metadata("taxi")["model_spec"]
    from skewless.serving.errors import ServingError

    for client in (rest, grpc_client):
        with pytest.raises(ServingError) as info:
            client.predict("nope", ROWS)
        assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_rest_client_returns_the_signature_dtypes(rest):
    outputs = rest.predict("taxi", ROWS)
    assert outputs["probabilities"].dtype == np.float32
    assert outputs["classes"].dtype == np.int64
