"""The compiled pipeline's tasks, executed here from the spec as open-source KFP 2.x runs them.

`kfp_launcher.run_pipeline` plays the backend's driver and launcher (see its docstring for the Go
files it follows): each task's exact container command, with `{{$}}` replaced by the executor
input the driver would build, in this venv. Two runs share the models volume: the first pushes,
the second finds that model as its baseline and records it on the evaluation.

The second run trains with another `train_args` and executes the Trainer and everything after it;
to stay within the test-time budget it takes the data tasks before the Trainer from the first
run, as if cached. (On a cluster ExampleGen is never cached, so they would run again on the same
files, to the same outputs.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from skewless.pipeline import build
from skewless.pipeline.config import parse_config
from skewless.pipeline.kubeflow import compile_pipeline
from skewless.pipeline.results import overall_metrics
from tests.conftest import sample_config_dict, write_sample
from tests.kubeflow.kfp_launcher import run_pipeline
from tests.kubeflow.test_open_source_kfp import backend_problems, load

# Two pipeline runs in the module fixture: more than the suite's per-test limit on a busy machine.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> dict:
    """A compiled spec whose volumes are folders here, and its two runs."""
    root = tmp_path_factory.mktemp("kfp")
    volumes = root / "volumes"
    # The data volume holds the file the data_root parameter names; the config's own data path
    # is elsewhere, as on a laptop that compiles for a cluster.
    write_sample(volumes / "data" / "taxi" / "data.csv", 1000)
    local = write_sample(root / "laptop" / "data.csv", 1000)
    raw = sample_config_dict(
        root / "laptop", local,
        model={"train_steps": 60, "eval_steps": 5},
        evaluation={"thresholds": [{"metric": "AUC", "lower_bound": 0.0, "max_decrease": 1.0}],
                    "slices": []},
    )
    raw["kubeflow"].update(
        data_root=str(volumes / "data" / "taxi"),
        push_dir=str(volumes / "models"),
        volumes=[{"claim_name": "skewless-data", "mount_path": str(volumes / "data")},
                 {"claim_name": "skewless-models", "mount_path": str(volumes / "models")}],
    )
    config = parse_config(raw, root / "laptop" / "taxi.yaml")
    spec, platform = load(compile_pipeline(config, root / "compiled"))
    assert backend_problems(spec, platform) == []
    tmp = root / "tmp"
    tmp.mkdir()
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp)
    try:
        first = run_pipeline(spec, root / "pipeline_root", "run-1")
        # A second run with another runtime parameter: a different model, the first as baseline.
        rerun = (build.TRAINER, build.BASELINE_MODEL, build.EVALUATOR, build.INFRA_VALIDATOR,
                 build.PUSHER)
        data_tasks = {name: run for name, run in first.items() if name not in rerun}
        second = run_pipeline(spec, root / "pipeline_root", "run-2",
                              {"train_args": json.dumps({"num_steps": 80})}, reuse=data_tasks)
    finally:
        if old is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old
    return {"spec": spec, "platform": platform, "models": volumes / "models" / "taxi",
            "first": first, "second": second, "tmp": tmp}


def _versions(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir())


def test_every_task_ran_from_the_spec_and_the_first_run_pushed(cluster):
    first = cluster["first"]
    assert set(first) == set(cluster["spec"]["root"]["dag"]["tasks"])
    assert list(first).index(build.BASELINE_MODEL) < list(first).index(build.EVALUATOR)
    # Input artifacts arrived as the open-source driver sends them: typeless.
    [baseline_in] = first[build.EVALUATOR].executor_input["inputs"]["artifacts"][
        "baseline_model"]["artifacts"]
    assert baseline_in["type"] == {"instanceSchema": ""} and baseline_in["name"].isdigit()
    pushed = first[build.PUSHER].outputs["pushed_model"]["metadata"]
    assert pushed["pushed"] == 1.0
    version = pushed["pushed_version"]
    assert version in _versions(cluster["models"])
    assert pushed["pushed_destination"] == str(cluster["models"] / version)
    # Nothing to compare with on the first run, and the evaluation says so.
    evaluation = first[build.EVALUATOR].outputs["evaluation"]
    assert evaluation["metadata"]["baseline_version"] == ""
    assert not any(is_baseline for _, is_baseline, _ in overall_metrics(evaluation["uri"]))


def test_second_run_compares_against_the_first_pushed_model(cluster):
    first_version = cluster["first"][build.PUSHER].outputs["pushed_model"]["metadata"][
        "pushed_version"]
    second = cluster["second"]
    assert second[build.TRAINER].executor_input != cluster["first"][build.TRAINER].executor_input
    evaluation = second[build.EVALUATOR].outputs["evaluation"]
    assert evaluation["metadata"]["baseline_version"] == first_version
    assert evaluation["metadata"]["baseline_path"] == str(cluster["models"] / first_version)
    metrics = overall_metrics(evaluation["uri"])
    assert ("auc", True, False) in metrics or ("AUC", True, False) in metrics, sorted(metrics)
    blessing = second[build.EVALUATOR].outputs["blessing"]["metadata"]
    pushed = second[build.PUSHER].outputs["pushed_model"]["metadata"]
    if blessing["blessed"] == 1.0:
        assert _versions(cluster["models"]) == sorted([first_version, pushed["pushed_version"]])
    else:
        assert _versions(cluster["models"]) == [first_version]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pushed_model_loads_in_skewless_serve(cluster, tmp_path):
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "skewless", "serve", "--host=127.0.0.1",
         f"--port={_free_port()}", f"--rest_api_port={port}", "--model_name=taxi",
         f"--model_base_path={cluster['models']}"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/taxi",
                                            timeout=2) as response:
                    status = json.loads(response.read())
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server never became ready"
                time.sleep(0.5)
        [served] = status["model_version_status"]
        assert served["state"] == "AVAILABLE"
        assert served["version"] == _versions(cluster["models"])[-1]
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
