"""The compiled pipeline uses only what open-source Kubeflow Pipelines 2.x executes.

The allowed set is read from the backend's source (github.com/kubeflow/pipelines, `backend/src/v2`,
main at 7b70c7b, 2026-08; the same code paths from tag 2.0.0 on):
- `compiler/visitor.go` (lines 105-134): a component's executor must be a container or an
  importer ("non-container and non-importer executor not implemented"); the kubernetes platform
  spec is looked up by executor label (`DeploymentSpec.Executors[executorLabel]`, line 115).
- `compiler/argocompiler/dag.go` (lines 337-352): "resolver executors not implemented", and
  custom jobs are "Google Cloud only".
- `driver/resolve.go`: input parameters are `componentInputParameter`, `taskOutputParameter`,
  `runtimeValue.constant` or `taskFinalStatus` (lines 389-495); input artifacts are
  `componentInputArtifact` or `taskOutputArtifact` (lines 544-569).
- Nothing under `backend/src/v2` reads a container's `lifecycle`: TFX's `preCacheCheck` hook (the
  ExampleGen driver Vertex runs) would be ignored silently.
- `driver/k8s.go` makeVolumeMountPatch (lines 1233-1280): a pvcMount needs a claim (`constant` is
  the deprecated but supported form) and a mount path.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

COMPILED = sorted((REPO / "kubeflow").glob("*-pipeline.yaml"))
PARAMETER_SOURCES = {"componentInputParameter", "taskOutputParameter", "runtimeValue",
                     "taskFinalStatus"}
ARTIFACT_SOURCES = {"componentInputArtifact", "taskOutputArtifact"}


def backend_problems(spec: dict, platform: dict | None) -> list[str]:
    """What the open-source KFP backend would refuse or ignore in a compiled spec."""
    problems = []
    if spec.get("schemaVersion") != "2.1.0":
        problems.append(f"schemaVersion {spec.get('schemaVersion')!r}, not 2.1.0")
    executors = spec["deploymentSpec"]["executors"]
    for label, executor in sorted(executors.items()):
        kinds = set(executor) - {"container", "importer"}
        if kinds or len(executor) != 1:
            problems.append(f"executor {label}: {sorted(executor)} is not a container or importer")
        if "lifecycle" in executor.get("container", {}):
            problems.append(f"executor {label}: lifecycle hooks are ignored by the backend")
    components = spec["components"]
    for name, component in sorted(components.items()):
        if "executorLabel" in component and component["executorLabel"] not in executors:
            problems.append(f"component {name}: executor {component['executorLabel']} missing")
    tasks = spec["root"]["dag"]["tasks"]
    root_parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    for name, task in sorted(tasks.items()):
        component = components[task["componentRef"]["name"]]
        declared = component.get("inputDefinitions", {})
        inputs = task.get("inputs", {})
        for kind, sources in (("parameters", PARAMETER_SOURCES), ("artifacts", ARTIFACT_SOURCES)):
            given = inputs.get(kind, {})
            wanted = declared.get(kind, {})
            for key in sorted(set(wanted) - set(given)):
                if not wanted[key].get("isOptional"):
                    problems.append(f"task {name}: input {key} is declared but not given")
            for key, source in sorted(given.items()):
                if key not in wanted:
                    problems.append(f"task {name}: input {key} is given but not declared")
                if not set(source) & sources:
                    problems.append(f"task {name}: input {key} comes from {sorted(source)}")
                parent = source.get("componentInputParameter")
                if parent is not None and parent not in root_parameters:
                    problems.append(f"task {name}: input {key} names no pipeline input {parent}")
                ref = source.get("taskOutputArtifact")
                if ref is not None:
                    producer = tasks.get(ref["producerTask"])
                    outputs = {} if producer is None else components[
                        producer["componentRef"]["name"]
                    ].get("outputDefinitions", {}).get("artifacts", {})
                    if ref["outputArtifactKey"] not in outputs:
                        problems.append(f"task {name}: input {key} reads "
                                        f"{ref['producerTask']}.{ref['outputArtifactKey']}, "
                                        "which no task outputs")
        for upstream in task.get("dependentTasks", []):
            if upstream not in tasks:
                problems.append(f"task {name}: depends on unknown task {upstream}")
    kubernetes = (platform or {}).get("platforms", {}).get("kubernetes", {})
    for label, config in sorted(kubernetes.get("deploymentSpec", {}).get("executors", {}).items()):
        if "container" not in executors.get(label, {}):
            problems.append(f"pvcMount for {label}, which names no container executor")
        for mount in config.get("pvcMount", []):
            claim = mount.get("constant") or mount.get("pvcNameParameter")
            if not claim or not mount.get("mountPath"):
                problems.append(f"pvcMount for {label}: claim and mountPath are required")
    return problems


def load(path: Path) -> tuple[dict, dict | None]:
    documents = list(yaml.safe_load_all(path.read_text()))
    return documents[0], documents[1] if len(documents) > 1 else None


@pytest.fixture(scope="module")
def committed() -> tuple[dict, dict | None]:
    return load(REPO / "kubeflow" / "taxi-pipeline.yaml")


def test_there_are_compiled_pipelines_to_check():
    assert [p.name for p in COMPILED] == ["taxi-batch-pipeline.yaml", "taxi-pipeline.yaml"]


@pytest.mark.parametrize("path", COMPILED, ids=lambda p: p.name)
def test_compiled_pipeline_uses_only_what_the_backend_runs(path):
    spec, platform = load(path)
    assert backend_problems(spec, platform) == []
    executors = spec["deploymentSpec"]["executors"].values()
    assert all(set(e) == {"container"} for e in executors)
    text = path.read_text()
    # Vertex ML Metadata filter syntax that only resolver queries use.
    assert "schema_title=" not in text and "number_value" not in text


def test_a_resolver_executor_fails_the_check(committed):
    spec, platform = copy.deepcopy(committed)
    spec["components"]["latest_blessed_model_resolver"] = {
        "executorLabel": "latest_blessed_model_resolver_executor"}
    spec["deploymentSpec"]["executors"]["latest_blessed_model_resolver_executor"] = {
        "resolver": {"outputArtifactQueries": {"model": {
            "filter": 'schema_title="tfx.Model" AND state=LIVE'}}}}
    assert backend_problems(spec, platform) == [
        "executor latest_blessed_model_resolver_executor: ['resolver'] is not a container or "
        "importer"]


def test_an_ignored_lifecycle_hook_fails_the_check(committed):
    spec, platform = copy.deepcopy(committed)
    container = spec["deploymentSpec"]["executors"]["ExampleGen_executor"]["container"]
    container["lifecycle"] = {"preCacheCheck": {"command": ["python"], "args": []}}
    assert backend_problems(spec, platform) == [
        "executor ExampleGen_executor: lifecycle hooks are ignored by the backend"]


def test_a_pvc_mount_for_no_executor_fails_the_check(committed):
    spec, platform = copy.deepcopy(committed)
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    executors["Resolver_executor"] = executors["Pusher_executor"]
    assert backend_problems(spec, platform) == [
        "pvcMount for Resolver_executor, which names no container executor"]


def test_unwired_inputs_fail_the_check(committed):
    spec, platform = copy.deepcopy(committed)
    evaluator = spec["root"]["dag"]["tasks"]["Evaluator"]["inputs"]
    evaluator["artifacts"]["baseline_model"]["taskOutputArtifact"]["producerTask"] = "Resolver"
    del evaluator["parameters"]["eval_config"]
    assert backend_problems(spec, platform) == [
        "task Evaluator: input eval_config is declared but not given",
        "task Evaluator: input baseline_model reads Resolver.baseline_model, which no task "
        "outputs",
    ]
