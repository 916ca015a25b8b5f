"""`skewless models`: the registry of two real runs, label moves on a running `skewless serve`,
the refusals, and readers of the SQLite store while a run writes it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from tensorflow_serving.apis import prediction_service_pb2_grpc

from skewless.cli import main
from skewless.pipeline.config import load_config
from tests.conftest import sample_config_dict, write_config, write_sample

pytestmark = pytest.mark.e2e

AUC_ANY = {"thresholds": [{"metric": "AUC", "lower_bound": 0.0}], "slices": []}
AUC_IMPOSSIBLE = {"thresholds": [{"metric": "AUC", "lower_bound": 0.9999}], "slices": []}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def run_in_process(workdir: Path, raw: dict):
    from skewless.pipeline.runner import run_pipeline

    config = load_config(write_config(workdir / "taxi.yaml", raw))
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(workdir / "tmp")
    try:
        run_pipeline(config, lambda event: None)
    finally:
        os.environ.pop("TMPDIR") if saved is None else os.environ.update(TMPDIR=saved)
    return config


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """Two runs of 1,000 rows (50, then 60 steps), each pushing a version: (config, v1, v2)."""
    workdir = tmp_path_factory.mktemp("registry")
    (workdir / "tmp").mkdir()
    data = write_sample(workdir / "data" / "data.csv", 1000)
    model = {"train_steps": 50, "eval_steps": 5}
    run_in_process(workdir, sample_config_dict(workdir, data, model=model, evaluation=AUC_ANY))
    raw = sample_config_dict(workdir, data, model={**model, "train_steps": 60},
                             evaluation=AUC_ANY)
    config = run_in_process(workdir, raw)
    versions = sorted(int(p.name) for p in config.model_push_dir.iterdir() if p.name.isdigit())
    assert len(versions) == 2, versions
    return config, versions[0], versions[1]


def _label_version(rest_port: int, label: str) -> int | None:
    url = f"http://127.0.0.1:{rest_port}/v1/models/taxi/labels/{label}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            [status] = json.load(response)["model_version_status"]
            return int(status["version"])
    except OSError:
        return None


def _grpc_label_version(stub, client, rows, label: str) -> int:
    request = client.predict_request("taxi", rows, label=label)
    return stub.Predict(request, timeout=10).model_spec.version.value


@pytest.fixture(scope="module")
def label_moves(two_versions, tmp_path_factory):
    """Promote v2 to stable, serve, promote v1 (not loaded yet: two steps) under a steady load,
    roll back: what was seen."""
    from skewless.pipeline.eval_rows import eval_rows
    from skewless.serving.client import GrpcClient, RestClient

    config, v1, v2 = two_versions
    config_path = str(config.source)
    first = cli("models", "promote", "--config", config_path, str(v2), "--label", "stable")
    assert first.exit_code == 0, first.output
    models_config = config.serving.push_dir / "models.config"
    tmp = tmp_path_factory.mktemp("serve")
    grpc_port, rest_port = free_port(), free_port()
    log = (tmp / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "skewless", "serve", "--host=127.0.0.1", f"--port={grpc_port}",
         f"--rest_api_port={rest_port}", f"--model_config_file={models_config}",
         "--model_config_file_poll_wait_seconds=1"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmp)})
    seen: dict = {"rest": [], "grpc": [], "outputs": [first.output]}
    try:
        deadline = time.monotonic() + 90
        while _label_version(rest_port, "stable") is None:
            assert server.poll() is None, (tmp / "serve.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.3)
        rows = eval_rows(config, limit=4)
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        rest, grpc_client = RestClient(port=rest_port, retries=0), GrpcClient(port=grpc_port,
                                                                               retries=0)
        load = {"sent": 0, "failed": []}
        stop = threading.Event()

        def steady_load() -> None:  # about 25 requests a second, REST and gRPC in turn
            while not stop.is_set():
                try:
                    client = rest if load["sent"] % 2 else grpc_client
                    client.predict("taxi", rows, label="stable")
                except Exception as error:  # noqa: BLE001 - every failure is counted
                    load["failed"].append(repr(error))
                load["sent"] += 1
                time.sleep(0.04)

        def observe() -> None:
            seen["rest"].append(_label_version(rest_port, "stable"))
            seen["grpc"].append(_grpc_label_version(stub, grpc_client, rows, "stable"))

        def wait_for(version: int) -> None:
            deadline = time.monotonic() + 30
            while _label_version(rest_port, "stable") != version:
                assert time.monotonic() < deadline, f"stable never moved to {version}"
                time.sleep(0.2)

        observe()
        worker = threading.Thread(target=steady_load)
        worker.start()
        try:
            time.sleep(1)
            before = models_config.read_text()
            seen["unloaded"] = cli("models", "promote", "--config", config_path, str(v1),
                                   "--label", "stable")
            seen["unchanged"] = models_config.read_text() == before
            moved = cli("models", "promote", "--config", config_path, str(v1), "--label",
                        "stable", "--server", f"127.0.0.1:{rest_port}", "--timeout", "60")
            seen["outputs"].append(moved.output)
            seen["promoted_config"] = models_config.read_text()
            wait_for(v1)
            observe()
            time.sleep(1)
            back = cli("models", "rollback", "--config", config_path, "--label", "stable")
            seen["outputs"].append(back.output)
            wait_for(v2)
            observe()
            time.sleep(1)
        finally:
            stop.set()
            worker.join()
        seen["load"] = load
        rest.close()
        grpc_client.close()
        channel.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    seen["server_log"] = (tmp / "serve.log").read_text()
    return seen


def test_rest_and_grpc_labels_follow_promotion_and_rollback(two_versions, label_moves):
    _, v1, v2 = two_versions
    assert label_moves["rest"] == [v2, v1, v2]
    assert label_moves["grpc"] == [v2, v1, v2]
    assert label_moves["outputs"][1].startswith(f"stable: version {v1} (was version {v2})")
    assert label_moves["outputs"][2].startswith(f"stable: version {v2} (was version {v1})")


def test_a_label_moves_to_an_unloaded_version_in_two_steps(two_versions, label_moves):
    """TF Serving refuses to move a label to a version still loading, and a refused reload never
    loads it: without --server, promote refuses and writes nothing; with it, the server loads the
    version first and never refuses a reload."""
    config, v1, v2 = two_versions
    refused = label_moves["unloaded"]
    assert refused.exit_code == 1
    assert refused.output == (
        f"Error: version {v1} is not loaded ({config.serving.push_dir / 'models.config'} loads "
        f"{v2}) and TF Serving moves a label only to a loaded version: pass --server HOST:PORT, "
        "the REST address of a server polling that file, to load it first and wait for it\n")
    assert label_moves["unchanged"]
    assert "not currently available" not in label_moves["server_log"]


def test_no_request_fails_while_the_label_moves(label_moves):
    load = label_moves["load"]
    assert load["sent"] > 50
    assert load["failed"] == []


def test_the_model_config_keeps_labelled_and_rollback_versions_loaded(two_versions,
                                                                       label_moves):
    _, v1, v2 = two_versions
    text = label_moves["promoted_config"]  # stable: v1, its rollback target v2
    assert f"versions: {v1}" in text and f"versions: {v2}" in text
    assert 'key: "stable"' in text and f"value: {v1}" in text


def test_mlmd_records_each_move(two_versions, label_moves):
    from skewless.pipeline.promotion import history
    from skewless.pipeline.store import connect

    config, v1, v2 = two_versions
    moves = [m for m in history(connect(config), config.pipeline.name) if m.label == "stable"]
    assert [(m.action, m.version, m.previous_version) for m in moves][:3] == [
        ("promote", v2, None), ("promote", v1, v2), ("rollback", v2, v1)]
    assert all(m.user for m in moves)


def test_list_shows_versions_data_metrics_blessing_and_labels(two_versions, label_moves):
    config, v1, v2 = two_versions
    result = cli("models", "list", "--config", str(config.source), "--json")
    assert result.exit_code == 0, result.output
    rows = {row["version"]: row for row in json.loads(result.output)}
    assert set(rows) == {v1, v2}
    assert rows[v2]["labels"] == ["stable"] and rows[v1]["labels"] == []
    for row in rows.values():
        assert row["pushed"] and row["blessed"] and row["why"] == "every threshold held"
        assert row["source"] == str(config.data.path.parent)
        assert row["rows"] == 1000
        assert set(row["metrics"]) == {m.class_name for m in config.task.metrics}
        assert 0.0 <= row["metrics"]["AUC"] <= 1.0
    table = cli("models", "list", "--config", str(config.source))
    assert f"{v1}" in table.output and "stable" in table.output


def test_show_gives_lineage_and_the_config_it_was_trained_with(two_versions):
    import hashlib

    config, v1, v2 = two_versions
    result = cli("models", "show", "--config", str(config.source), str(v1), "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    types = {row["artifact"] for row in shown["lineage"]}
    assert {"Examples", "Schema", "ExampleStatistics", "TransformGraph", "Model",
            "ModelEvaluation", "ModelBlessing", "PushedModel"} <= types
    text = shown["config"]["text"]
    assert "train_steps: 50" in text  # v1's run, not the config file as it is now
    assert shown["config"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    second = json.loads(cli("models", "show", "--config", str(config.source), str(v2),
                            "--json").output)
    assert "train_steps: 60" in second["config"]["text"]
    plain = cli("models", "show", "--config", str(config.source), str(v1))
    assert "TransformGraph #" in plain.output and "train_steps: 50" in plain.output


def test_promote_refuses_unknown_version_and_bad_label(two_versions):
    config, v1, v2 = two_versions
    unknown = cli("models", "promote", "--config", str(config.source), "12345", "--label",
                  "canary")
    assert unknown.exit_code == 1
    assert unknown.output == (f"Error: version 12345 of model taxi was never pushed "
                              f"(pushed versions: {v2}, {v1})\n")
    bad = cli("models", "promote", "--config", str(config.source), str(v1), "--label",
              "can-ary")
    assert bad.output == ("Error: invalid label 'can-ary': a TF Serving version label "
                          "matches [a-zA-Z0-9_]+\n")
    none = cli("models", "rollback", "--config", str(config.source), "--label", "nothing")
    assert none.output == ("Error: label nothing was never promoted: there is no earlier "
                           "version to roll back to\n")


def test_promote_refuses_a_version_missing_on_disk(two_versions, label_moves, tmp_path):
    config, v1, _ = two_versions
    folder = config.model_push_dir / str(v1)
    before = (config.serving.push_dir / "models.config").read_text()
    shutil.move(folder, tmp_path / "away")
    try:
        result = cli("models", "promote", "--config", str(config.source), str(v1), "--label",
                     "canary")
    finally:
        shutil.move(tmp_path / "away", folder)
    assert result.output == f"Error: version {v1} is not on disk: {folder} does not exist\n"
    assert (config.serving.push_dir / "models.config").read_text() == before


@pytest.fixture(scope="module")
def reevaluated(two_versions, label_moves):
    """v1's model evaluated again against a threshold it cannot meet, by `skewless run` in a
    subprocess, while two processes list the registry: each reader's (successes, errors)."""
    config, v1, _ = two_versions
    workdir = config.source.parent
    raw = sample_config_dict(workdir, config.data.path,
                             model={"train_steps": 50, "eval_steps": 5},
                             evaluation=AUC_IMPOSSIBLE)
    write_config(workdir / "strict.yaml", raw)
    env = {**os.environ, "TMPDIR": str(workdir / "tmp")}
    run = subprocess.Popen([sys.executable, "-m", "skewless", "run", "--config",
                            str(workdir / "strict.yaml")], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, env=env)
    reader = ("import subprocess, sys, json\n"
              "from click.testing import CliRunner\n"
              "from skewless.cli import main\n"
              "ok, errors = 0, []\n"
              "while True:\n"
              "    r = CliRunner().invoke(main, ['models', 'list', '--config', sys.argv[1],"
              " '--json'])\n"
              "    if r.exit_code == 0 and json.loads(r.output): ok += 1\n"
              "    else: errors.append(r.output[-300:] + repr(r.exception))\n"
              "    if open(sys.argv[2]).read() == 'stop': break\n"
              "print(json.dumps([ok, errors]))\n")
    flag = workdir / "stop-readers"
    flag.write_text("")
    readers = [subprocess.Popen([sys.executable, "-c", reader, str(config.source), str(flag)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env=env) for _ in range(2)]
    output, _ = run.communicate(timeout=600)
    flag.write_text("stop")
    seen = [json.loads(r.communicate(timeout=120)[0].strip().splitlines()[-1]) for r in readers]
    return output, seen


def test_two_readers_keep_working_while_a_run_writes(reevaluated):
    output, seen = reevaluated
    assert "blessed: NO" in output, output
    for ok, errors in seen:
        assert errors == []
        assert ok >= 2


def test_promote_refuses_an_unblessed_version_unless_forced(two_versions, reevaluated):
    config, v1, _ = two_versions
    refused = cli("models", "promote", "--config", str(config.source), str(v1), "--label",
                  "canary")
    assert refused.exit_code == 1
    assert refused.output == (f"Error: version {v1} is not blessed: its newest evaluation did "
                              "not meet the thresholds; pass --force to promote it anyway\n")
    listed = {r["version"]: r for r in json.loads(
        cli("models", "list", "--config", str(config.source), "--json").output)}
    assert listed[v1]["blessed"] is False
    assert listed[v1]["why"].startswith("auc 0.")
    assert listed[v1]["why"].endswith("below the lower bound 0.9999")
    forced = cli("models", "promote", "--config", str(config.source), str(v1), "--label",
                 "canary", "--force")
    assert forced.exit_code == 0, forced.output
    assert forced.output.startswith(f"canary: version {v1} (was nothing)")


def test_manifests_carry_the_registry_labels(two_versions, reevaluated, tmp_path):
    config, v1, _ = two_versions
    result = cli("manifests", "--config", str(config.source), "--output-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    models_config = (tmp_path / "base" / "models.config").read_text()
    assert 'key: "stable"' in models_config and 'key: "canary"' in models_config
    assert f"value: {v1}" in models_config
    deployment = (tmp_path / "base" / "deployment.yaml").read_text()
    assert "--allow_version_labels_for_unavailable_models=true" in deployment
    built = subprocess.run(["kubectl", "kustomize", str(tmp_path / "overlays" / "cpu")],
                           capture_output=True, text=True, check=True).stdout
    assert 'key: \\"stable\\"' in built or 'key: "stable"' in built
