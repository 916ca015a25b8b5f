"""`skewless compile --target batch`: the batch inference pipeline as a KFP v2 PipelineSpec."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.conftest import REPO, TAXI_CONFIG
from tests.kubeflow.test_compile import _normalised

COMMITTED = REPO / "kubeflow" / "taxi-batch-pipeline.yaml"
NODES = {"ExampleGen", "StatisticsGen", "ServingModel", "ExampleValidator", "AnomalyGate",
         "RowCountCheck", "BatchInference"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, str, dict, dict]:
    from skewless.cli import main

    folder = tmp_path_factory.mktemp("compiled-batch")
    result = CliRunner().invoke(main, ["compile", "--config", str(TAXI_CONFIG), "--target",
                                       "batch", "--output-dir", str(folder)])
    assert result.exit_code == 0, result.output
    assert f"Pipeline 'taxi-batch' compiled to {folder / 'taxi-batch-pipeline.yaml'}" in (
        result.output)
    path = folder / "taxi-batch-pipeline.yaml"
    text = path.read_text()
    spec, platform = yaml.safe_load_all(text)
    return path, text, spec, platform


def test_compile_batch_regenerates_the_committed_spec(compiled):
    _, text, _, _ = compiled
    assert _normalised(text) == _normalised(COMMITTED.read_text()), (
        "kubeflow/taxi-batch-pipeline.yaml is stale: run "
        "skewless compile --config configs/taxi.yaml --target batch"
    )


def test_batch_spec_parses_strictly_and_loads_in_kfp(compiled):
    from google.protobuf import json_format
    from kfp import components
    from kfp.client import client
    from kfp.pipeline_spec import pipeline_spec_pb2

    path, _, spec, platform = compiled
    parsed = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    assert parsed.pipeline_info.name == "taxi-batch"
    assert parsed.schema_version == "2.1.0"
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    component = components.load_component_from_file(str(path))
    assert set(component.component_spec.inputs) == {"data_root", "output_path", "model_version"}
    doc = client._extract_pipeline_yaml(str(path))
    assert doc.pipeline_spec.default_pipeline_root == "minio://mlpipeline/v2/artifacts"


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
