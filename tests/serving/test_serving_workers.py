"""``skewless serve --workers 2``: two processes on the same ports, each reloading on its own,
with Prometheus totals over both."""

from __future__ import annotations

import glob
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import grpc
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from skewless.serving.client import GrpcClient
from tests.serving import example_models
from tests.serving.conftest import CLIENT_TIMEOUT, install_version
from tests.serving.test_serving_cli import free_port

pytestmark = pytest.mark.e2e

ROWS = example_models.taxi_rows(2, seed=5)
METRICS_PATH = "/monitoring/prometheus/metrics"
REQUESTS = ":tensorflow:serving:request_count_total"


def fresh_connection_call(port: int, method: str, path: str, body: bytes | None = None):
    """One request on its own connection, so that the kernel picks a worker for each."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def predict(port: int) -> list:
    status, body = fresh_connection_call(port, "POST", "/v1/models/taxi:predict",
                                         json.dumps({"instances": ROWS}).encode())
    assert status == 200, body
    return json.loads(body)["predictions"]


def requests_by_worker(metrics_dir: str, pids: list[int], scratch) -> dict[int, float]:
    """Requests each worker counted, read from its own multiprocess file."""
    counts = {}
    for pid in pids:
        folder = scratch / str(pid)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for path in glob.glob(os.path.join(metrics_dir, f"*_{pid}.db")):
            shutil.copy(path, folder)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(folder))
        counts[pid] = sum(s.value for m in registry.collect() for s in m.samples
                          if s.name == REQUESTS)
    return counts


def test_two_workers_answer_reload_and_report_totals(tmp_path, models):
    base = str(tmp_path / "taxi")
    install_version(models.taxi_v1, base, 1)
    metrics_dir = str(tmp_path / "metrics")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}\n')
    grpc_port, rest_port = free_port(), free_port()
    command = [sys.executable, "-c", "from skewless.cli import main; main()", "serve",
               "--workers", "2", "--model_name", "taxi", "--model_base_path", base,
               "--port", str(grpc_port), "--rest_api_port", str(rest_port),
               "--file_system_poll_wait_seconds", "0.5", "--enable_batching",
               "--monitoring_config_file", str(monitoring)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PROMETHEUS_MULTIPROC_DIR=metrics_dir)
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    log = ""
    sent = 0
    try:
        deadline = time.monotonic() + 120
        while log.count("Exporting HTTP/REST API") < 2 and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            log += line
        assert log.count(f"Exporting HTTP/REST API at:127.0.0.1:{rest_port}") == 2, log
        pids = [int(p) for p in re.search(r"Started 2 workers \(pids (\d+), (\d+)\)",
                                          log).groups()]

        # Both processes answer: connections spread over them.
        first = predict(rest_port)
        for _ in range(39):
            assert predict(rest_port) == first
        sent += 40
        before_reload = requests_by_worker(metrics_dir, pids, tmp_path)
        assert all(count > 0 for count in before_reload.values()), before_reload
        assert sum(before_reload.values()) == sent

        # A new version: each process finds it on its own and both serve it.
        install_version(models.taxi_v2, base, 2)
        deadline = time.monotonic() + 60
        streak = 0
        while streak < 20 and time.monotonic() < deadline:
            answer = predict(rest_port)
            sent += 1
            streak = streak + 1 if answer != first else 0
        assert streak == 20, "the workers did not pick up version 2"
        reloaded = requests_by_worker(metrics_dir, pids, tmp_path)
        assert all(predict(rest_port) != first for _ in range(20))
        sent += 20
        after = requests_by_worker(metrics_dir, pids, tmp_path)
        assert all(after[p] - reloaded[p] > 0 for p in pids), (reloaded, after)

        # gRPC shares its port the same way.
        for _ in range(4):
            with GrpcClient(port=grpc_port, timeout=CLIENT_TIMEOUT) as client:
                probabilities = client.predict("taxi", ROWS)["probabilities"]
            assert probabilities.ravel().tolist() == pytest.approx(
                [row["probabilities"] for row in predict(rest_port)])
            sent += 3  # the client's GetModelMetadata, its Predict, the REST predict

        # A config reload would reach one process only: refused, and both keep serving v2.
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        reload = model_management_pb2.ReloadConfigRequest()
        entry = reload.config.model_config_list.config.add(name="taxi", base_path=base)
        entry.model_platform = "tensorflow"
        with pytest.raises(grpc.RpcError) as refused:
            model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
                reload, timeout=CLIENT_TIMEOUT)
        channel.close()
        sent += 1
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert refused.value.details() == (
            "HandleReloadConfigRequest would reach only one of the 2 processes of `skewless "
            "serve --workers 2`: change the --model_config_file instead, which every worker "
            "re-reads (--model_config_file_poll_wait_seconds)")
        assert all(predict(rest_port) != first for _ in range(10))
        sent += 10

        # /monitoring, answered by either process, shows the totals of both.
        status, text = fresh_connection_call(rest_port, "GET", METRICS_PATH)
        assert status == 200
        families = text_string_to_metric_families(text.decode())
        total = sum(s.value for f in families for s in f.samples if s.name == REQUESTS)
        assert total == sent
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    assert process.returncode == 0


def test_workers_must_be_positive(tmp_path):
    from click.testing import CliRunner

    from skewless.serving import cli

    result = CliRunner().invoke(cli.serve, ["--model_base_path", str(tmp_path), "--workers", "0"])
    assert result.exit_code == 2
    assert "Invalid value for '--workers': 0 is not in the range x>=1." in result.output
