"""Hot reload: versions load under load with zero failed requests; bad versions are contained."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from skewless.serving import cli
from skewless.serving import config as config_lib
from skewless.serving.client import GrpcClient, RestClient
from skewless.serving.errors import ServingError
from skewless.serving.server import ModelServer, ServerOptions
from tests.serving import example_models
from tests.serving.conftest import CLIENT_TIMEOUT, install_version

pytestmark = pytest.mark.e2e

ROW = example_models.taxi_rows(1, seed=11)
CLI_DEFAULTS = {param.name: param.default for param in cli.serve.params}


def wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def states(client, name: str = "taxi") -> dict[str, str]:
    return {s["version"]: s["state"] for s in client.status(name)}


def in_process(path: str) -> float:
    loaded = tf.saved_model.load(path)
    columns = example_models.taxi_columns(ROW)
    return float(loaded.signatures["serving_default"](
        **{k: tf.constant(v) for k, v in columns.items()})["probabilities"].numpy()[0])


@pytest.fixture()
def reload_server(tmp_path, models):
    base = str(tmp_path / "taxi")
    install_version(models.taxi_v1, base, 1)
    options = ServerOptions(
        models=config_lib.single_model_config("taxi", base),
        port=0,
        rest_api_port=0,
        file_system_poll_wait_seconds=0.2,
        batching=config_lib.BatchingConfig(max_batch_size=8, batch_timeout_micros=1000),
    )
    server = ModelServer(options).start()
    yield server, base
    server.stop()


def test_hot_reload_under_load_loses_no_request(reload_server, models):
    server, base = reload_server
    stop = threading.Event()
    failures: list[str] = []
    served_versions: list[int] = []
    counts = [0] * 8

    def client(worker: int) -> None:
        rest = worker % 2 == 0
        make = RestClient if rest else GrpcClient
        port = server.rest_port if rest else server.grpc_port
        with make(port=port, timeout=CLIENT_TIMEOUT, retries=0) as c:
            while not stop.is_set():
                try:
                    c.predict("taxi", ROW)
                    counts[worker] += 1
                except Exception as error:  # noqa: BLE001 - every failure is recorded
                    failures.append(repr(error))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    with RestClient(port=server.rest_port, timeout=CLIENT_TIMEOUT) as watcher:
        time.sleep(0.5)
        install_version(models.taxi_v2, base, 2)
        wait_for(lambda: states(watcher) == {"2": "AVAILABLE", "1": "END"}, what="version 2")
        served_versions.append(2)
        time.sleep(0.3)
        install_version(models.taxi_v3, base, 3)
        wait_for(lambda: states(watcher) == {"3": "AVAILABLE", "2": "END", "1": "END"},
                 what="version 3")
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join(CLIENT_TIMEOUT)
        assert failures == []
        assert all(count > 10 for count in counts), counts
        assert watcher.metadata("taxi")["model_spec"]["version"] == "3"
        answer = watcher.predict("taxi", ROW)["probabilities"][0]
    assert answer == pytest.approx(in_process(models.taxi_v3), abs=1e-6)
    assert answer != pytest.approx(in_process(models.taxi_v1), abs=1e-3)


def test_a_version_that_fails_to_load_is_reported_and_the_old_one_keeps_serving(
        reload_server, models):
    server, base = reload_server
    broken = os.path.join(base, ".broken")
    os.makedirs(broken)
    with open(os.path.join(broken, "saved_model.pb"), "wb") as handle:
        handle.write(b"this is not a SavedModel")
    os.rename(broken, os.path.join(base, "4"))
    with RestClient(port=server.rest_port, timeout=CLIENT_TIMEOUT) as client:
        wait_for(lambda: states(client).get("4") == "END", what="version 4 to fail")
        failed = next(s for s in client.status("taxi") if s["version"] == "4")
        assert failed["status"]["error_code"] != "OK" and failed["status"]["error_message"]
        assert states(client)["1"] == "AVAILABLE"
        assert client.metadata("taxi")["model_spec"]["version"] == "1"
        assert client.predict("taxi", ROW)["probabilities"].shape == (1,)

        # A version whose warm-up requests fail is not served either.
        staged = os.path.join(base, ".staged")
        example_models.export_taxi_model(staged, bias=2.0)
        example_models.write_warmup_requests(
            staged, [{"trip_miles": np.array([1.0], np.float32)}])  # missing inputs
        os.rename(staged, os.path.join(base, "5"))
        wait_for(lambda: states(client).get("5") == "END", what="version 5 to fail")
        failed = next(s for s in client.status("taxi") if s["version"] == "5")
        assert "warm-up request 1 failed" in failed["status"]["error_message"]
        assert client.metadata("taxi")["model_spec"]["version"] == "1"


def test_reload_config_adds_a_model_and_checks_labels(reload_server, models, tmp_path):
    server, base = reload_server
    clf_base = str(tmp_path / "classifier")
    install_version(models.classifier, clf_base, 1)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = model_management_pb2.ReloadConfigRequest()
    for name, path in (("taxi", base), ("classifier", clf_base)):
        request.config.model_config_list.config.add(name=name, base_path=path)
    response = stub.HandleReloadConfigRequest(request, timeout=60)
    assert response.status.error_code == 0
    with GrpcClient(port=server.grpc_port, timeout=CLIENT_TIMEOUT) as client:
        assert client.status("classifier")[0]["state"] == "AVAILABLE"
        bad = model_management_pb2.ReloadConfigRequest()
        bad.config.CopyFrom(request.config)
        bad.config.model_config_list.config[0].version_labels["stable"] = 9
        with pytest.raises(grpc.RpcError) as info:
            stub.HandleReloadConfigRequest(bad, timeout=60)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "version 9 of model taxi, which is not currently available" in (
            info.value.details())
        missing = model_management_pb2.ReloadConfigRequest()
        missing.config.model_config_list.config.add(name="x", base_path=str(tmp_path / "none"))
        with pytest.raises(grpc.RpcError) as info:
            stub.HandleReloadConfigRequest(missing, timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(ServingError):
            client.predict("x", ROW)
        assert client.predict("taxi", ROW)["probabilities"].shape == (1,)

        # An existing label moved to a version that is not loaded: refused before anything
        # applies, as TF Serving's UpdateModelVersionLabelMap does (it runs before loading).
        [served] = [int(s["version"]) for s in client.status("taxi")
                    if s["state"] == "AVAILABLE"]
        labelled = model_management_pb2.ReloadConfigRequest()
        labelled.config.CopyFrom(request.config)
        labelled.config.model_config_list.config[0].version_labels["stable"] = served
        assert stub.HandleReloadConfigRequest(labelled, timeout=60).status.error_code == 0
        moved = model_management_pb2.ReloadConfigRequest()
        moved.config.CopyFrom(labelled.config)
        del moved.config.model_config_list.config[1]  # would remove the classifier
        moved.config.model_config_list.config[0].version_labels["stable"] = served + 100
        with pytest.raises(grpc.RpcError) as info:
            stub.HandleReloadConfigRequest(moved, timeout=60)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert info.value.details() == (
            f"Request to assign label to version {served + 100} of model taxi, which is not "
            "currently available for inference.")
        assert client.status("classifier")[0]["state"] == "AVAILABLE"
        assert client.status("taxi", label="stable")[0]["version"] == str(served)
    channel.close()


def write_atomically(path, text: str) -> None:
    staged = f"{path}.staged"
    with open(staged, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(staged, path)


def model_config_text(*models: tuple[str, str]) -> str:
    entries = "".join(
        f'  config {{\n    name: "{name}"\n    base_path: "{path}"\n'
        '    model_platform: "tensorflow"\n  }\n'
        for name, path in models
    )
    return f"model_config_list {{\n{entries}}}\n"


def test_the_model_config_file_is_re_read_and_a_broken_edit_keeps_the_old_config(
        tmp_path, models, caplog):
    taxi_base, clf_base = str(tmp_path / "taxi"), str(tmp_path / "classifier")
    install_version(models.taxi_v1, taxi_base, 1)
    install_version(models.classifier, clf_base, 1)
    config_file = str(tmp_path / "models.config")
    write_atomically(config_file, model_config_text(("taxi", taxi_base)))
    options = cli.options_from_flags(**{
        **CLI_DEFAULTS, "model_config_file": config_file,
        "model_config_file_poll_wait_seconds": 0.2, "file_system_poll_wait_seconds": 0,
    })
    options = dataclasses.replace(options, port=0, rest_api_port=0)  # free ports
    caplog.set_level(logging.INFO, logger="skewless.serving")
    with ModelServer(options) as server, RestClient(port=server.rest_port,
                                                    timeout=CLIENT_TIMEOUT) as client:
        with pytest.raises(ServingError):
            client.status("classifier")
        write_atomically(config_file, model_config_text(("taxi", taxi_base),
                                                        ("classifier", clf_base)))
        wait_for(lambda: "classifier" in server.manager.model_names()
                 and states(client, "classifier").get("1") == "AVAILABLE",
                 what="the classifier to be added")
        assert "(Re-)adding model: classifier" in caplog.text

        write_atomically(config_file, 'model_config_list {\n  config {\n    nme: "x"\n')
        wait_for(lambda: "Failed to read ModelServerConfig file" in caplog.text,
                 what="the broken file to be logged")
        assert f"{config_file}:3:" in caplog.text
        assert states(client, "classifier")["1"] == "AVAILABLE"
        assert client.predict("taxi", ROW)["probabilities"].shape == (1,)

        write_atomically(config_file, model_config_text(("classifier", clf_base)))
        wait_for(lambda: "taxi" not in server.manager.model_names(),
                 what="taxi to be removed")
        with pytest.raises(ServingError) as info:
            client.predict("taxi", ROW)
        assert info.value.code == grpc.StatusCode.NOT_FOUND
        assert states(client, "classifier")["1"] == "AVAILABLE"
