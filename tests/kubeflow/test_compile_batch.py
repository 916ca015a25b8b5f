"""`skewless compile --target batch`: the batch inference pipeline as a KFP v2 PipelineSpec."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO, TAXI_CONFIG
from tests.kubeflow.compiled import assert_kfp_takes, compile_with_cli, normalised

COMMITTED = REPO / "kubeflow" / "taxi-batch-pipeline.yaml"
NODES = {"ExampleGen", "StatisticsGen", "ServingModel", "ExampleValidator", "AnomalyGate",
         "RowCountCheck", "BatchInference"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, str, dict, dict]:
    folder = tmp_path_factory.mktemp("compiled-batch")
    return compile_with_cli(TAXI_CONFIG, folder, "taxi-batch-pipeline.yaml", "--target", "batch")


def test_compile_batch_regenerates_the_committed_spec(compiled):
    _, text, _, _ = compiled
    assert normalised(text) == normalised(COMMITTED.read_text()), (
        "kubeflow/taxi-batch-pipeline.yaml is stale: run "
        "skewless compile --config configs/taxi.yaml --target batch"
    )


def test_batch_spec_parses_strictly_and_loads_in_kfp(compiled):
    path, _, spec, platform = compiled
    assert_kfp_takes(path, spec, platform, "taxi-batch",
                     {"data_root", "output_path", "model_version"})


def test_batch_tasks_are_container_tasks_fed_by_runtime_parameters(compiled):
    _, _, spec, platform = compiled
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == NODES
    # Open-source KFP runs container and importer executors only (no resolver).
    executors = spec["deploymentSpec"]["executors"]
    assert all("container" in e for e in executors.values())
    mounted = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(mounted) == set(executors)

    def source(task, name):
        return tasks[task]["inputs"]["parameters"][name].get("componentInputParameter")

    assert source("ExampleGen", "input_base") == "data_root"
    assert source("RowCountCheck", "input_base") == "data_root"
    assert source("BatchInference", "output_path") == "output_path"
    assert source("ServingModel", "version") == "model_version"
    declared = spec["root"]["inputDefinitions"]["parameters"]
    assert declared["data_root"]["defaultValue"] == "/mnt/data/taxi/batch"
    assert declared["output_path"]["defaultValue"] == "/mnt/data/taxi/predictions/taxi.parquet"
    assert declared["model_version"]["defaultValue"] == ""
    assert set(tasks["BatchInference"]["dependentTasks"]) >= {"AnomalyGate", "RowCountCheck"}
