"""Unit tests of the pure parts: configs, versions, JSON codec, tensors, validation, batching."""

from __future__ import annotations

import math

import grpc
import numpy as np
import orjson
import pytest

from skewless.serving import config, rest_codec, tensors, validation, versions
from skewless.serving.errors import ServingError
from skewless.serving.rest_server import parse_model_path
from skewless.serving.servable import Signature, TensorSpec

F32, I64, STR = np.dtype(np.float32), np.dtype(np.int64), np.dtype(object)


def spec(alias: str, dtype: np.dtype, shape=(-1,)) -> TensorSpec:
    enum = {F32: 1, I64: 9, STR: 7}[dtype]
    return TensorSpec(alias, f"{alias}:0", enum, dtype, shape)


SPECS = {"fare": spec("fare", F32), "hour": spec("hour", I64), "company": spec("company", STR)}


def signature(defaults=None) -> Signature:
    return Signature("serving_default", "tensorflow/serving/predict", SPECS,
                     {"p": spec("p", F32)}, defaults or {})


def error_of(call, *args, **kwargs) -> ServingError:
    with pytest.raises(ServingError) as info:
        call(*args, **kwargs)
    return info.value


# -- config ------------------------------------------------------------------------------------


def test_model_config_file_policies_and_labels(tmp_path):
    path = tmp_path / "m.config"
    path.write_text(
        'model_config_list { config { name: "a" base_path: "/x/a" } '
        'config { name: "b" base_path: "rel" model_version_policy { specific { versions: 3 '
        'versions: 1 } } version_labels { key: "stable" value: 1 } } '
        'config { name: "c" base_path: "/c" model_version_policy { latest { num_versions: 2 } } }'
        ' config { name: "d" base_path: "/d" model_version_policy { all {} } } }'
    )
    a, b, c, d = config.load_model_config_file(str(path))
    assert a.version_policy == config.VersionPolicy("latest", 1)
    assert b.version_policy == config.VersionPolicy("specific", versions=(1, 3))
    assert dict(b.version_labels) == {"stable": 1} and b.base_path.endswith("/rel")
    assert c.version_policy.num_versions == 2 and d.version_policy.kind == "all"


def test_malformed_config_file_names_the_line(tmp_path):
    path = tmp_path / "bad.config"
    path.write_text('model_config_list {\n  config {\n    name: "a"\n    basepath: "/x"\n  }\n}\n')
    with pytest.raises(config.ConfigError, match=r"bad.config:4:\d+: .*basepath"):
        config.load_model_config_file(str(path))


@pytest.mark.parametrize(
    "text, message",
    [
        ('model_config_list { config { base_path: "/x" } }', "name is required"),
        ('model_config_list { config { name: "a" } }', "base_path is required"),
        ('model_config_list { config { name: "a" base_path: "/x" } '
         'config { name: "a" base_path: "/y" } }', "used twice"),
        ('model_config_list { config { name: "a" base_path: "/x" '
         'version_labels { key: "../up" value: 1 } } }', "invalid version label"),
        ('model_config_list { config { name: "a" base_path: "/x" model_platform: "torch" } }',
         "not supported"),
    ],
)
def test_invalid_model_configs(tmp_path, text, message):
    path = tmp_path / "m.config"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=message):
        config.load_model_config_file(str(path))


def test_missing_base_path_is_a_one_line_error(tmp_path):
    models = config.single_model_config("taxi", str(tmp_path / "nowhere"))
    with pytest.raises(config.ConfigError, match="nowhere of model 'taxi' does not exist"):
        config.check_base_paths(models)


def test_batching_parameters_defaults_and_values(tmp_path):
    path = tmp_path / "b.config"
    path.write_text("max_batch_size { value: 32 }\nbatch_timeout_micros { value: 500 }\n"
                    "allowed_batch_sizes: 8\nallowed_batch_sizes: 32\n")
    parsed = config.load_batching_parameters_file(str(path))
    assert (parsed.max_batch_size, parsed.batch_timeout_micros) == (32, 500)
    assert parsed.allowed_batch_sizes == (8, 32)
    assert parsed.max_enqueued_batches == 10  # TF Serving's default
    empty = tmp_path / "e.config"
    empty.write_text("")
    assert config.load_batching_parameters_file(str(empty)).max_batch_size == 1000


@pytest.mark.parametrize(
    "text, message",
    [
        ("max_batch_size { value: 32 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 16\n",
         "must equal max_batch_size"),
        ("max_batch_size { value: 8 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 4\n",
         "monotonically increasing"),
        ("num_batch_threads { value: 0 }\n", "num_batch_threads must be positive"),
        ("max_batch_size: 3\n", r"b.config:1:\d+"),
    ],
)
def test_invalid_batching_parameters(tmp_path, text, message):
    path = tmp_path / "b.config"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=message):
        config.load_batching_parameters_file(str(path))


def test_monitoring_config(tmp_path):
    path = tmp_path / "m.config"
    path.write_text("prometheus_config { enable: true }\n")
    parsed = config.load_monitoring_config_file(str(path))
    assert parsed.prometheus_enabled and parsed.prometheus_path == "/monitoring/prometheus/metrics"
    path.write_text("prometheus_config { enabled: true }\n")
    with pytest.raises(config.ConfigError, match=r"m.config:1:\d+"):
        config.load_monitoring_config_file(str(path))


# -- versions ------------------------------------------------------------------------------------


def test_find_versions_needs_a_numeric_folder_with_a_saved_model(tmp_path):
    for name in ("1", "7", "abc", "3"):
        (tmp_path / name).mkdir()
    for name in ("1", "7", "abc"):
        (tmp_path / name / "saved_model.pb").write_bytes(b"x")
    assert sorted(versions.find_versions(str(tmp_path))) == [1, 7]
    assert versions.find_versions(str(tmp_path / "missing")) == {}


@pytest.mark.parametrize(
    "policy, expected",
    [
        (config.VersionPolicy("latest", 1), {9}),
        (config.VersionPolicy("latest", 2), {5, 9}),
        (config.VersionPolicy("all"), {1, 5, 9}),
        (config.VersionPolicy("specific", versions=(1, 4)), {1}),
    ],
)
def test_select_versions(policy, expected):
    assert versions.select_versions([5, 1, 9], policy) == expected


# -- tensors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.array([[1.5, -2.0], [3.25, 4.0]], np.float32),
        np.array([1, -(2**40)], np.int64),
        np.array([b"a", b"\xff\x00"], object),
        np.array([True, False]),
        np.array(3.5, np.float64),
    ],
)
def test_tensor_proto_round_trip(array):
    decoded = tensors.to_ndarray(tensors.to_tensor_proto(array))
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    assert decoded.tolist() == array.tolist()


def test_tensor_content_and_bad_sizes():
    import tensorflow as tf

    proto = tf.make_tensor_proto(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert tensors.to_ndarray(proto).tolist() == [[0, 1, 2], [3, 4, 5]]
    proto = tensors.to_tensor_proto(np.array([1.0, 2.0, 3.0], np.float32))
    proto.tensor_shape.dim[0].size = 2
    assert "tensor parsing error: x" in error_of(tensors.to_ndarray, proto, "x").message


def test_known_layouts_still_check_every_tensor(monkeypatch):
    """Decoding keeps checked (dtype, shape) layouts: a kept one decodes the same, a shape or
    value count that differs is still refused, and a flood of shapes does not grow the store."""
    monkeypatch.setattr(tensors, "_LAYOUTS", {})
    row = tensors.to_tensor_proto(np.array([[1.5, 2.5]], np.float32))
    for _ in range(2):
        assert tensors.to_ndarray(row, "x").tolist() == [[1.5, 2.5]]
    assert len(tensors._LAYOUTS) == 1
    short = tensors.to_tensor_proto(np.array([[1.5, 2.5, 3.5]], np.float32))
    short.tensor_shape.dim[1].size = 2  # the known layout, with a value too many
    assert error_of(tensors.to_ndarray, short, "x").message == (
        "tensor parsing error: x: 3 values do not fit shape [1,2] of 2 elements")
    negative = tensors.to_tensor_proto(np.array([[1.5, 2.5]], np.float32))
    negative.tensor_shape.dim[0].size = -1
    assert error_of(tensors.to_ndarray, negative, "x").message == (
        "tensor parsing error: x: negative dimension in shape [-1,2]")
    for width in range(3, 3 + tensors._MAX_LAYOUTS + 10):
        tensors.to_ndarray(tensors.to_tensor_proto(np.zeros((1, width), np.float32)))
    assert len(tensors._LAYOUTS) == tensors._MAX_LAYOUTS
    assert tensors.to_ndarray(tensors.to_tensor_proto(np.ones((1, 9999), np.float32))).shape == (
        1, 9999)
    tensors._LAYOUTS.clear()
    named = tensors.to_tensor_proto(np.array([[1.5, 2.5]], np.float32))
    named.tensor_shape.dim[0].name = "x" * 10_000  # a key no request should pin in memory
    assert tensors.to_ndarray(named, "x").tolist() == [[1.5, 2.5]]
    assert tensors._LAYOUTS == {}


# -- validation ----------------------------------------------------------------------------------


def test_prepare_inputs_orders_and_casts():
    inputs = {"hour": np.array([3]), "fare": np.array([1.5], np.float32),
              "company": np.array(["Flash"])}
    aliases, values = validation.prepare_inputs(signature(), inputs)
    assert aliases == ("fare", "hour", "company")
    assert values[2].tolist() == [b"Flash"]


def test_missing_input_uses_tf_serving_message_and_defaults():
    error = error_of(validation.prepare_inputs, signature(),
                     {"fare": np.array([1.0], np.float32), "hour": np.array([1])})
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message.startswith(
        "Signature input alias: company(feed name: company:0) not found in request and no "
        "default value provided. Inputs expected to be in the request {fare,hour}")
    with_default = signature({"company": np.array([b"Default"], object)})
    _, values = validation.prepare_inputs(
        with_default, {"fare": np.array([1.0], np.float32), "hour": np.array([1])})
    assert values[2].tolist() == [b"Default"]


def test_extra_input_and_wrong_dtype():
    inputs = {"fare": np.array([1.0], np.float32), "hour": np.array([1]),
              "company": np.array([b"x"], object), "tip": np.array([1.0])}
    assert "Inputs contains invalid name" in error_of(
        validation.prepare_inputs, signature(), inputs).message
    inputs = {"fare": np.array([b"x"], object), "hour": np.array([1]),
              "company": np.array([b"x"], object)}
    assert error_of(validation.prepare_inputs, signature(), inputs).message == (
        "Expects arg[0] to be float but string is provided")


def test_shape_mismatch_and_batch_size():
    inputs = {"fare": np.ones((2, 2), np.float32), "hour": np.array([1, 2]),
              "company": np.array([b"x", b"y"], object)}
    assert "does not match the signature's shape [-1]" in error_of(
        validation.prepare_inputs, signature(), inputs).message
    assert "equal 0th-dimension" in error_of(
        validation.batch_size, (), [np.ones(2), np.ones(3)]).message


# -- REST JSON -----------------------------------------------------------------------------------


def test_row_and_columnar_decoding():
    doc = {"instances": [{"fare": 1, "hour": 3, "company": "A"},
                         {"fare": 2.5, "hour": 4, "company": {"b64": "Qg=="}}]}
    inputs, fmt = rest_codec.decode_predict_request(doc, SPECS)
    assert fmt == "row"
    assert inputs["fare"].dtype == np.float32 and inputs["fare"].tolist() == [1.0, 2.5]
    assert inputs["hour"].dtype == np.int64 and inputs["company"].tolist() == [b"A", b"B"]
    inputs, fmt = rest_codec.decode_predict_request(
        {"inputs": {"fare": [[1, 2]], "hour": [5], "company": ["x"], "ignored": 1}}, SPECS)
    assert fmt == "columnar" and inputs["fare"].shape == (1, 2) and "ignored" not in inputs


def test_nan_and_infinity_are_accepted_and_written_back():
    doc = rest_codec.parse_json(b'{"inputs": {"fare": [NaN, Infinity, -Infinity]}}')
    array = rest_codec.json_to_array(doc["inputs"]["fare"], SPECS["fare"])
    assert math.isnan(array[0]) and array[1] == np.inf and array[2] == -np.inf
    body = rest_codec.encode_predict_response({"p": array}, "columnar")
    assert body == b'{"outputs":[NaN,Infinity,-Infinity]}'


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"instances": [{"fare": 1}], "inputs": {}}, "expecting only one of 'inputs' or "
         "'instances' keys to exist"),
        ({"nothing": 1}, "Missing 'inputs' or 'instances' key"),
        ({"instances": []}, "No values in 'instances' array"),
        ({"instances": {"fare": 1}}, "Excepting 'instances' to be an list/array"),
        ({"instances": [{"fare": 1, "hour": 1}]},
         "Failed to process element: 0 of 'instances' list. JSON object: "
         '{"fare":1,"hour":1} keys must be equal to: company,fare,hour'),
        ({"instances": [{"fare": 1, "hour": 1, "company": "a", "tip": 2}]},
         "Failed to process element: 0 key: tip of 'instances' list. Error: INVALID_ARGUMENT: "
         "JSON object: does not have named input: tip"),
        ({"instances": [{"fare": "x", "hour": 1, "company": "a"}]},
         "Failed to process element: 0 key: fare of 'instances' list. Error: INVALID_ARGUMENT: "
         'JSON Value: "x" Type: String is not of expected type: float'),
        ({"instances": [{"fare": 1, "hour": 1.5, "company": "a"}]},
         "JSON Value: 1.5 Type: Number is not of expected type: int64"),
        ({"inputs": {"fare": [1], "hour": [1]}}, "Missing named input: company in 'inputs' "
         "object."),
        ({"inputs": {"fare": [[1, 2], [3]], "hour": [1], "company": ["a"]}},
         "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        ({"inputs": {"fare": [1], "hour": [1], "company": [{"b64": "%%"}]}},
         "Unable to base64 decode"),
        ({"inputs": {"fare": [1e39], "hour": [1], "company": ["a"]}},
         "to float without loss of precision"),
        ({"inputs": [1, 2]}, "inputs is a plain value/list, but expecting an object"),
    ],
)
def test_bad_predict_bodies(doc, message):
    error = error_of(rest_codec.decode_predict_request, doc, SPECS)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.message


def test_bad_json_and_signature_name():
    assert error_of(rest_codec.parse_json, b"{oops").message.startswith("JSON Parse error: ")
    assert error_of(rest_codec.parse_json, b"").message == (
        "JSON Parse error: The document is empty")
    assert "Is not object" in error_of(rest_codec.parse_json, b"[1]").message
    assert "'signature_name' key must be a string value." in error_of(
        rest_codec.signature_name_of, {"signature_name": 3}).message


def test_response_formats():
    outputs = {"p": np.array([0.25, 0.5], np.float32), "c": np.array([0, 1], np.int64)}
    assert orjson.loads(rest_codec.encode_predict_response(outputs, "row")) == {
        "predictions": [{"p": 0.25, "c": 0}, {"p": 0.5, "c": 1}]}
    assert orjson.loads(rest_codec.encode_predict_response({"p": outputs["p"]}, "row")) == {
        "predictions": [0.25, 0.5]}
    assert orjson.loads(rest_codec.encode_predict_response(outputs, "columnar")) == {
        "outputs": {"p": [0.25, 0.5], "c": [0, 1]}}
    body = rest_codec.encode_predict_response(
        {"img_bytes": np.array([b"\x00\x01"], object)}, "row")
    assert orjson.loads(body) == {"predictions": [{"b64": "AAE="}]}
    assert rest_codec.encode_predict_response({"p": np.array([0.1], np.float32)}, "row") == (
        b'{"predictions":[0.1]}')  # float32 written in its shortest form, as TF Serving


def test_examples_request():
    request_input = rest_codec.decode_examples_request(
        {"context": {"c": "x"}, "examples": [{"x": 1.5, "n": [1, 2], "s": {"b64": "QQ=="}}]})
    example = request_input.example_list_with_context.examples[0]
    assert list(example.features.feature["n"].int64_list.value) == [1, 2]
    assert example.features.feature["s"].bytes_list.value == [b"A"]
    assert "'examples' value is an empty array" in error_of(
        rest_codec.decode_examples_request, {"examples": []}).message
    assert "expecting type: int64" in error_of(
        rest_codec.decode_examples_request, {"examples": [{"x": [1, 1.5]}]}).message


# -- paths ---------------------------------------------------------------------------------------


def test_parse_model_path():
    spec_, verb, _ = parse_model_path("POST", "/v1/models/taxi/versions/3:predict")
    assert (spec_.name, spec_.version, verb) == ("taxi", 3, "predict")
    spec_, verb, _ = parse_model_path("GET", "/v1/models/taxi/labels/can%20ary/metadata")
    assert (spec_.label, verb) == ("can ary", "metadata")
    spec_, _, _ = parse_model_path("POST", "/v1/models/..%2F..%2Fetc:predict")
    assert spec_.name == "../../etc"
    assert parse_model_path("POST", "/v1/models/taxi:explain") is None
    assert parse_model_path("PUT", "/v1/models/taxi") is None
    assert "Failed to convert version" in error_of(
        parse_model_path, "GET", "/v1/models/t/versions/99999999999999999999").message
