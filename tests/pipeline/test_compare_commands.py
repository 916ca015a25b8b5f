"""A model that does not serve is not pushed, and `skewless models compare` on two labels of a
running `skewless serve`.

One small run with a model that serves wrongly (batch statistics at inference) is shared: its
`skewless run` must refuse the push and say why, and its trained model is the "different model"
that a canary comparison must catch against the shared `pushed_taxi` model.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from tests.conftest import sample_config_dict, write_config, write_sample
from tests.pipeline.helpers import skewless, states, versions

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def buggy_run(tmp_path_factory):
    """`skewless run` with a build_fn that normalises by batch statistics at inference."""
    workdir = tmp_path_factory.mktemp("buggy")
    data = write_sample(workdir / "data" / "data.csv", 1000)
    raw = sample_config_dict(
        workdir, data,
        model={"train_steps": 50, "eval_steps": 10,
               "build_fn": "tests.transforms.custom_network.batch_statistics"},
        evaluation={"thresholds": [{"metric": "AUC", "lower_bound": 0.0}]})
    config = write_config(workdir / "taxi.yaml", raw)
    result = skewless("run", "--config", str(config), tmpdir=workdir / "tmp")
    [model] = (workdir / "out" / "pipeline_root").glob("Trainer/model/*/Format-Serving")
    return result, workdir, model


def test_a_model_that_does_not_answer_as_in_process_is_not_pushed_and_the_run_says_why(
        buggy_run):
    result, workdir, _ = buggy_run
    assert result.returncode == 0, result.stderr[-2000:]
    assert states(result.stdout)["InfraValidator"] == "executed"
    assert "  blessed: yes\n" in result.stdout
    [line] = [x for x in result.stdout.splitlines() if x.startswith("  pushed: ")]
    assert line.startswith("  pushed: NO - the model failed on the server: REST answer to row 0: "
                           "output "), line
    assert "the in-process prediction [" in line
    assert "served:" not in result.stdout
    assert versions(workdir / "serving" / "taxi") == []


@pytest.fixture(scope="module")
def server(pushed_taxi, buggy_run, tmp_path_factory):
    """`skewless serve` with labels: stable and canary on two copies of the pushed model,
    buggy on the buggy run's model. Yields (config path, gRPC port, REST port, server log)."""
    config, version = pushed_taxi
    _, _, buggy_model = buggy_run
    root = tmp_path_factory.mktemp("labels")
    base = root / "taxi"
    pushed = config.model_push_dir / str(version)
    shutil.copytree(pushed, base / "1")
    shutil.copytree(pushed, base / "2")
    shutil.copytree(buggy_model, base / "3")
    model_config = root / "models.config"
    model_config.write_text(f"""
model_config_list {{
  config {{
    name: "taxi" base_path: "{base}" model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
    version_labels {{ key: "buggy" value: 3 }}
  }}
}}
""")
    grpc_port, rest_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "skewless", "serve", "--model_config_file", str(model_config),
         "--port", str(grpc_port), "--rest_api_port", str(rest_port)],
        stderr=subprocess.PIPE, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "Exporting HTTP/REST API" in line:
                break
        yield config.source, grpc_port, rest_port, "".join(lines)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def compare(*args):
    from skewless.cli import main

    return CliRunner().invoke(main, ["models", "compare", *args])


def test_serve_replays_the_warmup_requests_the_pushed_model_carries(server):
    *_, log = server
    for version in (1, 2):
        assert f"Finished reading 8 warmup data for model taxi version {version}" in log, log


def test_the_same_model_under_two_labels_agrees_fully(server, tmp_path):
    config, grpc_port, _, _ = server
    report = tmp_path / "compare.json"
    result = compare("--config", str(config), "--baseline", "stable", "--candidate", "canary",
                     "--server", f"127.0.0.1:{grpc_port}", "--num-rows", "40",
                     "--json", str(report))
    assert result.exit_code == 0, result.output
    assert "Agreement: 1.0000 (40 of 40 rows given the same class)" in result.output
    assert "probabilities: mean absolute difference 0, max 0" in result.output
    assert "PASS: canary is within the limits against stable" in result.output
    document = json.loads(report.read_text())
    assert document["agreement"] == 1.0 and document["rows"] == 40
    assert document["failures"] == []
    for label in ("stable", "canary"):
        assert 0 < document["latency_ms"][label]["p50"] <= document["latency_ms"][label]["p99"]
    assert set(document["most_different"][0]["features"]) >= {"trip_miles", "company"}


def test_a_different_model_disagrees_and_fails_the_gate(server):
    config, _, rest_port, _ = server
    result = compare("--config", str(config), "--candidate", "buggy", "--rest",
                     "--server", f"127.0.0.1:{rest_port}", "--min-agreement", "0.99")
    assert result.exit_code == 1, result.output
    agreement = float(result.output.split("Agreement: ")[1].split()[0])
    assert agreement < 0.99
    assert "FAIL: agreement" in result.output and "below the minimum 0.9900" in result.output
    assert "(DIFFERENT; difference" in result.output
    mean = float(result.output.split("mean absolute difference ")[1].split(",")[0])
    assert mean > 0.01


def test_an_unknown_label_is_one_line(server):
    config, grpc_port, _, _ = server
    result = compare("--config", str(config), "--candidate", "nope", "--server",
                     f"127.0.0.1:{grpc_port}", "--num-rows", "2")
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line == (f"Error: label nope of model taxi at 127.0.0.1:{grpc_port} (gRPC): "
                    "INVALID_ARGUMENT: Unrecognized servable version label: nope")  # TF Serving's


@pytest.mark.parametrize("args, message", [
    (["--server", "localhost"], "--server: expected HOST:PORT with a port from 1 to 65535, "
                                "got 'localhost'"),
    (["--server", "h:1", "--baseline", "canary"], "--baseline and --candidate are both "
                                                  "'canary'; compare two labels"),
    (["--server", "h:1", "--candidate", "can-ary"], "--candidate: invalid label 'can-ary': a "
                                                    "TF Serving version label matches "
                                                    "[a-zA-Z0-9_]+"),
    (["--server", "h:1", "--num-rows", "0"], "--num-rows must be at least 1, got 0"),
    (["--server", "h:1", "--min-agreement", "1.5"], "--min-agreement must be in [0, 1], got 1.5"),
])
def test_bad_flags_are_one_line(pushed_taxi, args, message):
    config, _ = pushed_taxi
    result = compare("--config", str(config.source), *args)
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [f"Error: {message}"]


def test_a_bad_rows_file_and_an_unreachable_server_are_one_line(pushed_taxi, tmp_path):
    config, _ = pushed_taxi
    rows = tmp_path / "rows.json"
    rows.write_text('{"instances": 3}')
    result = compare("--config", str(config.source), "--server", "127.0.0.1:1",
                     "--rows", str(rows))
    assert result.output.strip().splitlines() == [
        f"Error: {rows}: expected a non-empty JSON list of feature objects"]
    port = free_port()  # nothing listens there
    result = compare("--config", str(config.source), "--server", f"127.0.0.1:{port}",
                     "--num-rows", "1", "--timeout", "2")
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"Error: cannot reach 127.0.0.1:{port} (gRPC): "), line
