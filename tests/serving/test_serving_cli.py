"""The ``serve``, ``predict`` and ``serve-demo`` commands, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from skewless.serving import cli
from tests.serving import example_models
from tests.serving.conftest import install_version


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_rejects_a_missing_base_path(tmp_path):
    result = CliRunner().invoke(cli.serve, ["--model_name", "taxi", "--model_base_path",
                                            str(tmp_path / "missing")])
    assert result.exit_code != 0
    assert result.output.strip().splitlines()[-1] == (
        f"Error: Model base path {tmp_path / 'missing'} of model 'taxi' does not exist or is "
        "not a directory")


def test_serve_names_the_line_of_a_malformed_config_file(tmp_path):
    config = tmp_path / "models.config"
    config.write_text('model_config_list {\n  config {\n    name: "taxi"\n    base_pth: "/x"\n'
                      "  }\n}\n")
    result = CliRunner().invoke(cli.serve, ["--model_config_file", str(config)])
    assert result.exit_code != 0
    assert f"Error: {config}:4:" in result.output and "base_pth" in result.output
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 8 }\nallowed_batch_sizes: 4\n")
    result = CliRunner().invoke(cli.serve, ["--model_config_file", str(config),
                                            "--batching_parameters_file", str(batching)])
    assert result.exit_code != 0 and "Error:" in result.output


@pytest.mark.e2e
def test_serve_logs_loads_before_opening_ports_then_predict_works(tmp_path, models):
    base = str(tmp_path / "taxi")
    install_version(models.taxi_v1, base, 1)
    grpc_port, rest_port = free_port(), free_port()
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(example_models.taxi_rows(3)))
    command = [sys.executable, "-c", "from skewless.serving.cli import serve; serve()",
               "--model_name", "taxi", "--model_base_path", base, "--port", str(grpc_port),
               "--rest_api_port", str(rest_port), "--enable_batching"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "Exporting HTTP/REST API" in line:
                break
        log = "".join(lines)
        loaded = log.index("Successfully loaded servable version {name: taxi version: 1}")
        assert loaded < log.index(f"Running gRPC ModelServer at 127.0.0.1:{grpc_port}")
        assert f"Exporting HTTP/REST API at:127.0.0.1:{rest_port}" in log
        outputs = {}
        for transport, port in (("--rest", rest_port), ("--grpc", grpc_port)):
            result = CliRunner().invoke(cli.predict, [transport, "--model", "taxi", "--json",
                                                      str(rows), "--port", str(port)])
            assert result.exit_code == 0, result.output
            outputs[transport] = json.loads(result.output)
        assert outputs["--rest"]["classes"] == outputs["--grpc"]["classes"]
        assert len(outputs["--grpc"]["probabilities"]) == 3
        result = CliRunner().invoke(cli.predict, ["--grpc", "--model", "nope", "--json",
                                                  str(rows), "--port", str(grpc_port)])
        assert result.exit_code != 0
        assert "NOT_FOUND: Servable not found for request: Latest(nope)" in result.output
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    assert process.returncode == 0


@pytest.mark.e2e
def test_serve_demo_prints_rest_and_grpc_predictions(tmp_path, models):
    base = str(tmp_path / "taxi")
    install_version(models.taxi_v1, base, 1)
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(example_models.taxi_rows(3)))
    result = CliRunner().invoke(cli.serve_demo, ["--model_base_path", base, "--json",
                                                 str(rows)])
    assert result.exit_code == 0, result.output
    assert "REST predictions for 3 rows:" in result.output
    assert "gRPC predictions for 3 rows:" in result.output
    assert result.output.count("probabilities: [") == 2
    assert "Server stopped." in result.output
