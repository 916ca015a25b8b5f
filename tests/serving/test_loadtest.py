"""`skewless loadtest` against a `skewless serve` on loopback, with short bounded ramps."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from skewless.cli import main
from skewless.serving import loadtest, resources
from tests.conftest import TAXI_CONFIG
from tests.serving.conftest import install_version

ROWS = [
    {"trip_miles": 2.5, "fare": 9.25, "trip_start_hour": 19, "payment_type": "Credit Card",
     "company": "Dispatch Taxi Affiliation"},
    {"trip_miles": 0.8, "fare": 5.0, "trip_start_hour": 2, "payment_type": "Cash",
     "company": "Taxi Affiliation Services"},
    {"trip_miles": 11.0, "fare": 31.5, "trip_start_hour": 8, "payment_type": "Cash",
     "company": "Flash Cab"},
]
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    def __init__(self, process: subprocess.Popen, grpc_port: int, rest_port: int) -> None:
        self.process, self.grpc_port, self.rest_port = process, grpc_port, rest_port


@pytest.fixture(scope="module")
def served(tmp_path_factory, models):
    """`skewless serve` with batching and Prometheus, as a user starts it; stopped at the end."""
    root = tmp_path_factory.mktemp("loadtest-server")
    install_version(models.taxi_v1, str(root / "taxi"), 1)
    monitoring = root / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true path: "{PROMETHEUS_PATH}" }}\n')
    grpc_port, rest_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "skewless", "serve", "--model_name=taxi",
         f"--model_base_path={root / 'taxi'}", f"--port={grpc_port}",
         f"--rest_api_port={rest_port}", "--enable_batching",
         f"--monitoring_config_file={monitoring}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/v1/models/taxi", timeout=2):
                break
        except OSError:
            assert process.poll() is None, "skewless serve exited"
            assert time.monotonic() < deadline, "skewless serve did not open its ports"
            time.sleep(0.3)
    yield Served(process, grpc_port, rest_port)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture()
def rows_file(tmp_path) -> Path:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps({"instances": ROWS}))
    return path


@pytest.fixture()
def config_copy(tmp_path) -> Path:
    path = tmp_path / "taxi.yaml"
    shutil.copy(TAXI_CONFIG, path)
    return path


def invoke(*args: str):
    return CliRunner().invoke(main, ["loadtest", *args], catch_exceptions=False)


def rendered_overlays(config: Path, tmp_path: Path) -> dict[str, list[dict]]:
    """`skewless manifests`, then `kubectl kustomize` of each overlay, as a cluster gets it."""
    out = tmp_path / "manifests"
    result = CliRunner().invoke(main, ["manifests", "--config", str(config), "--output-dir",
                                       str(out), "--no-local"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rendered = {}
    for overlay in ("gpu", "cpu"):
        text = subprocess.run(["kubectl", "kustomize", str(out / "overlays" / overlay)],
                              check=True, capture_output=True, text=True).stdout
        rendered[overlay] = list(yaml.safe_load_all(text))
        for resource in rendered[overlay]:
            kubernetes_validate.validate(resource, kubernetes_validate.latest_version(),
                                         strict=True)
    return rendered


def hpa(resources_: list[dict]) -> dict:
    [autoscaler] = [r for r in resources_ if r["kind"] == "HorizontalPodAutoscaler"]
    return autoscaler["spec"]


@pytest.mark.e2e
def test_rest_ramp_writes_json_plot_replicas_and_a_config_that_deploys(
        served, rows_file, config_copy, tmp_path):
    out = tmp_path / "out"
    result = invoke("--model", "taxi", "--rows", str(rows_file), "--port", str(served.rest_port),
                    "--concurrency", "1,4", "--step-seconds", "1", "--slo-p99-ms", "5000",
                    "--pid", str(served.process.pid), "--processes", "1",
                    "--config", str(config_copy), "--peak-qps", "500", "--headroom", "0.25",
                    "--output-dir", str(out), "--write-config")
    assert result.exit_code == 0, result.output
    progress = [line for line in result.output.splitlines() if line.startswith("ok ")]
    assert len(progress) == 2 and "conc       1:" in progress[0] and "conc       4:" in progress[1]

    document = json.loads((out / "loadtest.json").read_text())
    steps = document["steps"]
    assert [s["load"] for s in steps] == [1.0, 4.0]
    for s in steps:
        assert s["requests"] > 0 and s["errors"] == 0 and s["rows_per_second"] > 0
        assert 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"]
        assert s["server_cpu_cores"] > 0.01 and s["server_rss_mb"] > 50  # TensorFlow is loaded
        assert s["generator_cpu_cores"] > 0
        if resources.gpu_monitor() is None:  # no NVML or no GPU: the GPU columns stay empty
            assert s["gpu_utilization"] is None and s["gpu_memory_mb"] is None
    knee = steps[document["knee"]]
    recommendation = document["recommendation"]
    assert recommendation["replicas"] == math.ceil(500 / (knee["requests_per_second"] * 0.75))
    assert recommendation["target_cpu_utilization"] == max(1, min(100, math.floor(
        100 * 0.75 * knee["server_cpu_cores"] / 2.0)))  # the cpu overlay requests 2 cores
    png = (out / "loadtest.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000

    text = config_copy.read_text()
    assert "# TF Serving batching guide: threads = cores, queue ~ threads" in text
    assert "# `skewless manifests`: TensorFlow Serving on Kubernetes" in text
    rendered = rendered_overlays(config_copy, tmp_path)
    spec = hpa(rendered["cpu"])
    assert spec["maxReplicas"] == recommendation["replicas"]
    assert spec["metrics"] == [{"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": recommendation["target_cpu_utilization"]}}}]


@pytest.mark.e2e
def test_grpc_open_loop_reads_the_server_from_prometheus_and_autoscales_on_requests(
        served, rows_file, config_copy, tmp_path):
    out = tmp_path / "out"
    url = f"http://127.0.0.1:{served.rest_port}{PROMETHEUS_PATH}"
    result = invoke("--grpc", "--model", "taxi", "--rows", str(rows_file), "--port",
                    str(served.grpc_port), "--rate", "20,40", "--step-seconds", "1",
                    "--slo-p99-ms", "5000", "--prometheus-url", url, "--processes", "1",
                    "--config", str(config_copy), "--peak-qps", "1000", "--headroom", "0.5",
                    "--autoscale-on", "requests", "--output-dir", str(out), "--write-config")
    assert result.exit_code == 0, result.output
    document = json.loads((out / "loadtest.json").read_text())
    assert document["target"]["transport"] == "grpc"
    for s, rate in zip(document["steps"], (20, 40), strict=True):
        # Open loop: the offered rate is what gets through while the server keeps up.
        assert s["mode"] == "rate" and s["errors"] == 0
        assert s["requests_per_second"] == pytest.approx(rate, rel=0.35)
        assert s["server_cpu_cores"] > 0 and s["server_rss_mb"] > 50
    recommendation = document["recommendation"]
    knee = document["steps"][document["knee"]]
    assert recommendation["replicas"] == math.ceil(1000 / (knee["requests_per_second"] * 0.5))
    rendered = rendered_overlays(config_copy, tmp_path)
    spec = hpa(rendered["gpu"])
    assert spec["maxReplicas"] == recommendation["replicas"]
    [metric] = spec["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "tensorflow_serving_requests_per_second"
    written = yaml.safe_load(config_copy.read_text())["deployment"]["replicas"]
    assert written["target_cpu_utilization"] is None
    assert written["target_requests_per_second"] == recommendation["target_requests_per_second"]


@pytest.mark.e2e
def test_batching_sweep_recommends_parameters_that_serve_loads(
        models, rows_file, config_copy, tmp_path):
    from skewless.serving.config import load_batching_parameters_file

    base = tmp_path / "taxi"
    install_version(models.taxi_v1, str(base), 1)
    out = tmp_path / "sweep"
    result = invoke("--sweep-batching", "--model_base_path", str(base), "--model", "taxi",
                    "--rows", str(rows_file), "--max-batch-sizes", "2,8",
                    "--batch-timeouts-micros", "0,1000", "--sweep-concurrency", "8",
                    "--step-seconds", "0.5", "--slo-p99-ms", "5000", "--processes", "1",
                    "--output-dir", str(out), "--config", str(config_copy), "--write-config")
    assert result.exit_code == 0, result.output
    sweep = json.loads((out / "batching_sweep.json").read_text())
    assert [t["max_batch_size"] for t in sweep["max_batch_size_trials"]] == [2, 8]
    assert {t["batch_timeout_micros"] for t in sweep["max_batch_size_trials"]} == {100_000}
    assert [t["batch_timeout_micros"] for t in sweep["batch_timeout_trials"]] == [0, 1000]
    best = sweep["best"]
    params = load_batching_parameters_file(str(out / "batching_parameters.txt"))
    assert params.num_batch_threads == os.cpu_count()
    assert (params.max_batch_size, params.batch_timeout_micros) == (
        best["max_batch_size"], best["batch_timeout_micros"])
    written = yaml.safe_load(config_copy.read_text())["deployment"]["cpu"]["batching"]
    assert written["max_batch_size"] == best["max_batch_size"]
    assert "# TF Serving batching guide" in config_copy.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--headroom", "1.5"], "--headroom must be in [0, 1)"),
        (["--concurrency", "4,2"], "--concurrency: levels must increase"),
        (["--concurrency", "one"], "--concurrency: expected comma-separated numbers"),
        (["--concurrency", "1", "--rate", "5"], "give --concurrency (closed loop) or --rate"),
        (["--write-config"], "--write-config needs --config"),
        (["--write-config", "--config", "{config}"], "--write-config needs --peak-qps"),
        (["--write-config", "--config", "{config}", "--peak-qps", "10"],
         "--write-config with --autoscale-on cpu needs the server's CPU: give --pid"),
        (["--sweep-batching"], "--sweep-batching starts its own servers"),
        (["--peak-qps", "-3"], "--peak-qps must be positive"),
        (["--connections", "0"], "--connections must be at least 1"),
        (["--pid", "999999999"], "--pid 999999999: no such local process"),
        (["--port", "1"], "rest 127.0.0.1:1: UNAVAILABLE"),
        (["--prometheus-url", "http://127.0.0.1:1/metrics"],
         "--prometheus-url http://127.0.0.1:1/metrics: no Prometheus metrics there"),
        (["--max-batch-sizes", "8,x", "--sweep-batching", "--model_base_path", "."],
         "--max-batch-sizes: expected comma-separated numbers"),
    ],
    ids=["headroom", "decreasing", "not-numbers", "both-modes", "write-no-config",
         "write-no-peak", "write-cpu-unmeasured",
         "sweep-no-base", "peak", "connections", "pid", "unreachable", "prometheus", "sizes"],
)
def test_bad_flags_give_one_line_errors(rows_file, config_copy, args, message):
    before = config_copy.read_bytes()
    args = [str(config_copy) if a == "{config}" else a for a in args]
    result = invoke("--model", "taxi", "--rows", str(rows_file), *args)
    assert config_copy.read_bytes() == before
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines


def test_bad_rows_give_one_line_errors(tmp_path, config_copy):
    bad = tmp_path / "rows.json"
    bad.write_text("[1, 2]")
    for args, message in (
        (["--model", "taxi", "--rows", str(bad)], "expected a non-empty JSON list"),
        (["--model", "taxi"], "give --rows FILE, or --config"),
        (["--config", str(config_copy)], "no ExampleGen output yet"),
        (["--model", "taxi", "--rows", str(tmp_path / "missing.json")], "No such file"),
    ):
        result = invoke(*args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and message in lines[0], lines


def test_levels_parse():
    assert loadtest.parse_levels("1,2.5,8", "--rate") == (1.0, 2.5, 8.0)
    with pytest.raises(ValueError, match="--rate: every level must be a positive number"):
        loadtest.parse_levels("0,1", "--rate")
