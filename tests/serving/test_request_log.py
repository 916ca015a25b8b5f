"""Request logging: what REST and gRPC clients send comes back from the log files, read with TF
Serving's own protos; nothing is lost at sampling 1.0; a full queue drops and counts, never
stalls; files complete on reload, by age and at shutdown; a bad logging_config is one line."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from tensorflow_serving.apis import (
    classification_pb2,
    input_pb2,
    prediction_log_pb2,
    regression_pb2,
)

from skewless.serving import config as config_lib
from skewless.serving import request_log, tensors
from skewless.serving.client import GrpcClient, RestClient
from skewless.serving.server import ModelServer, ServerOptions
from tests.serving import example_models
from tests.serving.conftest import CLIENT_TIMEOUT, install_version, predict_request
from tests.serving.test_serving_cli import free_port

pytestmark = pytest.mark.e2e

LOGGING = """logging_config {{
      log_collector_config {{ type: "{type}" filename_prefix: "{prefix}" }}
      sampling_config {{ sampling_rate: {rate} }}
    }}"""


def _config_text(root: Path, rate: float = 1.0, collector: str = "tfrecord") -> str:
    def logging(name: str) -> str:
        return LOGGING.format(type=collector, prefix=root / "logs" / name, rate=rate)

    return f"""model_config_list {{
  config {{ name: "taxi" base_path: "{root / 'taxi'}" {logging('taxi')} }}
  config {{ name: "classifier" base_path: "{root / 'classifier'}" {logging('classifier')} }}
}}
"""


@pytest.fixture()
def root(tmp_path, models) -> Path:
    install_version(models.taxi_v1, str(tmp_path / "taxi"), 1)
    install_version(models.classifier, str(tmp_path / "classifier"), 1)
    (tmp_path / "models.config").write_text(_config_text(tmp_path))
    return tmp_path


def _server(root: Path, **options) -> ModelServer:
    models = config_lib.load_model_config_file(str(root / "models.config"))
    return ModelServer(ServerOptions(
        models=models, port=0, rest_api_port=0, file_system_poll_wait_seconds=0,
        batching=config_lib.BatchingConfig(max_batch_size=16, batch_timeout_micros=500),
        **options,
    ))


def _records(folder: Path) -> list[prediction_log_pb2.PredictionLog]:
    """Every record of the complete files, read by TensorFlow (CRCs checked)."""
    files = sorted(str(p) for p in folder.glob("*.tfrecord"))
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(files)] if files else []


def _logged(server: ModelServer, status: str, model: str = "taxi") -> float:
    text = server.metrics.exposition().decode()
    match = re.search(
        rf':tensorflow:serving:request_log_count_total\{{model_name="{model}",'
        rf'status_code="{status}"\}} (\S+)', text)
    return float(match.group(1)) if match else 0.0


def _examples(values: list[float]) -> input_pb2.Input:
    request_input = input_pb2.Input()
    for value in values:
        example = request_input.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(value)
    return request_input


def test_rest_and_grpc_requests_come_back_from_the_logs_as_sent(root):
    rest_rows = example_models.taxi_rows(3, seed=5)
    grpc_request = predict_request("taxi", example_models.taxi_rows(2, seed=6))
    miles = tensors.to_ndarray(grpc_request.inputs["trip_miles"])  # sent as raw bytes
    grpc_request.inputs["trip_miles"].ClearField("float_val")
    grpc_request.inputs["trip_miles"].tensor_content = miles.tobytes()
    started = int(time.time())
    with _server(root) as server:
        with RestClient(port=server.rest_port, timeout=CLIENT_TIMEOUT, retries=0) as rest:
            rest_answer = rest.predict("taxi", rest_rows)
        with GrpcClient(port=server.grpc_port, timeout=CLIENT_TIMEOUT, retries=0) as client:
            grpc_answer = client.call(client._prediction.Predict, grpc_request)
            classify = classification_pb2.ClassificationRequest(input=_examples([0.5, -2.0]))
            classify.model_spec.name = "classifier"
            classified = client.call(client._prediction.Classify, classify)
            regress = regression_pb2.RegressionRequest(input=_examples([3.0]))
            regress.model_spec.name = "classifier"
            regress.model_spec.signature_name = "regress_x"
            regressed = client.call(client._prediction.Regress, regress)
        assert not list((root / "logs").glob("*.tfrecord")), "files complete only when closed"
    assert not list((root / "logs").glob("*.tmp")), "shutdown completes every file"

    taxi = _records(root / "logs")
    taxi = [log for log in taxi if log.log_metadata.model_spec.name == "taxi"]
    assert [log.WhichOneof("log_type") for log in taxi] == ["predict_log", "predict_log"]
    for log in taxi:
        meta = log.log_metadata
        assert (meta.model_spec.version.value, meta.model_spec.signature_name) == (
            1, "serving_default")
        assert meta.sampling_config.sampling_rate == 1.0
        assert list(meta.saved_model_tags) == ["serve"]
        assert started <= meta.timestamp_secs <= time.time()
    by_rows = {log.predict_log.request.inputs["fare"].tensor_shape.dim[0].size: log
               for log in taxi}
    sent_rest = example_models.taxi_columns(rest_rows)
    logged_rest = by_rows[3].predict_log
    for name, column in sent_rest.items():
        np.testing.assert_array_equal(
            tensors.to_ndarray(logged_rest.request.inputs[name]).reshape(-1),
            np.asarray(column).reshape(-1))
    for name, array in rest_answer.items():
        np.testing.assert_allclose(tensors.to_ndarray(logged_rest.response.outputs[name]), array)
    logged_grpc = by_rows[2].predict_log
    assert logged_grpc.request.inputs == grpc_request.inputs  # the gRPC request as received
    assert logged_grpc.response.outputs == grpc_answer.outputs

    (classify_log,) = [log.classify_log for log in _records(root / "logs")
                       if log.WhichOneof("log_type") == "classify_log"]
    assert classify_log.request.input == classify.input
    assert classify_log.response.result == classified.result
    (regress_log,) = [log.regress_log for log in _records(root / "logs")
                      if log.WhichOneof("log_type") == "regress_log"]
    assert regress_log.request.input == regress.input
    assert regress_log.request.model_spec.signature_name == "regress_x"
    assert regress_log.response.result == regressed.result


def test_sampling_one_under_concurrent_load_loses_nothing(root):
    rows = example_models.taxi_rows(1, seed=2)
    with _server(root) as server:
        def send(i: int) -> None:
            if i % 2:
                with RestClient(port=server.rest_port, timeout=CLIENT_TIMEOUT, retries=0) as c:
                    c.predict("taxi", rows)
            else:
                with GrpcClient(port=server.grpc_port, timeout=CLIENT_TIMEOUT, retries=0) as c:
                    c.call(c._prediction.Predict, predict_request("taxi", rows))

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(send, range(200)))
    assert len(_records(root / "logs")) == 200
    assert _logged(server, "OK") == 200
    assert _logged(server, "RESOURCE_EXHAUSTED") == 0


def test_a_full_queue_drops_and_counts_and_never_stalls_a_request(root, monkeypatch):
    writing = threading.Event()
    release = threading.Event()
    original = request_log.LogFiles.write

    def blocked_write(self, record: bytes) -> None:
        writing.set()
        release.wait(30)
        original(self, record)

    monkeypatch.setattr(request_log.LogFiles, "write", blocked_write)
    rows = example_models.taxi_rows(1, seed=3)
    with _server(root, request_log_queue_records=2) as server:
        with RestClient(port=server.rest_port, timeout=CLIENT_TIMEOUT, retries=0) as rest:
            rest.predict("taxi", rows)
            assert writing.wait(10), "the writer took the first record"
            slowest = 0.0
            for _ in range(29):
                start = time.perf_counter()
                rest.predict("taxi", rows)
                slowest = max(slowest, time.perf_counter() - start)
        assert slowest < 2.0
        assert _logged(server, "RESOURCE_EXHAUSTED") == 27  # 1 being written + 2 queued
        release.set()
    assert _logged(server, "OK") == 3
    assert len(_records(root / "logs")) == 3


def _wait_for_records(folder: Path, count: int, timeout: float = 10) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _records(folder)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    return _records(folder)


def test_a_hot_reload_completes_the_open_files_and_shutdown_the_rest(root):
    rows = example_models.taxi_rows(1, seed=4)
    with _server(root) as server:
        with RestClient(port=server.rest_port, timeout=CLIENT_TIMEOUT, retries=0) as rest:
            rest.predict("taxi", rows)
            rest.predict("taxi", rows)
            server.manager.reload_config(
                config_lib.load_model_config_file(str(root / "models.config")))
            assert len(_wait_for_records(root / "logs", 2)) == 2
            assert len(list((root / "logs").glob("taxi-*.tfrecord"))) == 1
            rest.predict("taxi", rows)
    files = sorted((root / "logs").glob("taxi-*.tfrecord"))
    assert [len(_records_of(f)) for f in files] == [2, 1]
    assert re.fullmatch(r"taxi-\d{8}T\d{6}Z-\d+-\d{5}\.tfrecord", files[0].name)


def _records_of(path: Path) -> list:
    return list(tf.data.TFRecordDataset(str(path)))


def test_files_complete_by_age_and_by_size(root):
    rows = example_models.taxi_rows(1, seed=7)
    limits = request_log.FileLimits(max_bytes=4000, max_seconds=0.5)
    with _server(root, request_log_limits=limits) as server:
        with RestClient(port=server.rest_port, timeout=CLIENT_TIMEOUT, retries=0) as rest:
            rest.predict("taxi", rows)
            assert len(_wait_for_records(root / "logs", 1, timeout=5)) == 1, "complete by age"
            for _ in range(12):
                rest.predict("taxi", rows)
    sizes = [p.stat().st_size for p in (root / "logs").glob("taxi-*.tfrecord")]
    assert len(sizes) >= 3 and max(sizes) <= 4000
    assert len(_records(root / "logs")) == 13


@pytest.mark.parametrize("edit, message", [
    (dict(collector="kafka"),
     "Cannot find LogCollector::Factory for type: 'kafka' (skewless serve writes type "
     "'tfrecord')"),
    (dict(rate=1.5), "logging_config.sampling_config.sampling_rate must be between 0 and 1, "
                     "got 1.5"),
])
def test_a_bad_logging_config_is_one_line(root, edit, message):
    path = root / "bad.config"
    path.write_text(_config_text(root, **edit))
    with pytest.raises(config_lib.ConfigError) as caught:
        config_lib.load_model_config_file(str(path))
    assert str(caught.value) == f"{path}: model 'taxi': {message}"


def test_serve_refuses_a_log_folder_it_cannot_write_in_one_line(root):
    from skewless.cli import main

    (root / "blocker").write_text("a file, not a folder")
    text = _config_text(root).replace(str(root / "logs"), str(root / "blocker" / "logs"))
    (root / "models.config").write_text(text)
    result = CliRunner().invoke(main, [
        "serve", f"--port={free_port()}", "--rest_api_port=0",
        f"--model_config_file={root / 'models.config'}"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[-1] == (f"Error: cannot write request logs under {root / 'blocker' / 'logs'}: "
                         "Not a directory")


def test_a_logging_config_without_a_filename_prefix_is_one_line(root):
    path = root / "bad.config"
    path.write_text(_config_text(root).replace(f'filename_prefix: "{root / "logs" / "taxi"}"', ""))
    with pytest.raises(config_lib.ConfigError, match=(
            r"model 'taxi': logging_config.log_collector_config.filename_prefix is required$")):
        config_lib.load_model_config_file(str(path))
