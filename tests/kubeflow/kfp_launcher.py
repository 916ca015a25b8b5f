"""Runs a compiled KFP v2 PipelineSpec on this machine as open-source Kubeflow Pipelines 2.x would.

What the backend does per task, read from kubeflow/pipelines `backend/src/v2` and mirrored here:
- `driver/driver.go` provisionOutputs: each output artifact gets `name` = its output key, a `uri`
  under `<pipeline root>/<task>/<salt>/<key>`, and the type of the component's outputDefinitions.
- `driver/resolve.go` resolveInputs / resolveInputArtifact / resolveUpstreamArtifacts: parameters
  from `runtimeValue.constant` or the run's `componentInputParameter`; an input artifact is the
  producer's output as recorded in MLMD, converted by `metadata/client.go`
  (OutputArtifact.ToRuntimeArtifact with `Schema: ""` from GetOutputArtifactsByExecutionId) and
  `metadata/converter.go` toRuntimeArtifact: `name` = the MLMD id, the uri, properties and custom
  properties flattened into `metadata`, and an EMPTY `instanceSchema`.
- `component/launcher_v2.go` compileCmdAndArgs: `{{$}}` in command and args becomes the
  ExecutorInput as JSON; execute runs `command + args`; the executor output file is read and
  merged into the outputs (mergeRuntimeArtifacts: uri and metadata); RecordArtifact stores
  metadata through `metadata/converter.go` StructValueToMLMDValue (numbers become doubles, bools
  ints, lists and structs are wrapped) and adds `display_name` and `store_session_info`.

Differences, on purpose: the pipeline root is a local folder rather than an object store (so no
download/upload step and no `minio://` paths; `tests/kubeflow/test_entrypoint.py` covers the
URI translation), the output file is per task rather than `/tmp/kfp_outputs/output_metadata.json`
of each pod, `python` is this venv's interpreter (the image's role), and nothing is cached.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
from pathlib import Path

EXECUTOR_INPUT = "{{$}}"
_ids = itertools.count(1)


@dataclasses.dataclass
class TaskRun:
    """One executed task: its executor input and the artifacts it recorded, by output key."""

    name: str
    executor_input: dict
    outputs: dict[str, dict]


def task_order(spec: dict) -> list[str]:
    """The root DAG's tasks, each after every task it depends on or reads from."""
    tasks = spec["root"]["dag"]["tasks"]
    order: list[str] = []

    def upstream(name: str) -> set[str]:
        task = tasks[name]
        found = set(task.get("dependentTasks", []))
        for artifact in task.get("inputs", {}).get("artifacts", {}).values():
            found.add(artifact["taskOutputArtifact"]["producerTask"])
        return found

    def visit(name: str, path: tuple[str, ...] = ()) -> None:
        if name in order:
            return
        if name in path:
            raise ValueError(f"cycle through {name}")
        for parent in sorted(upstream(name)):
            visit(parent, (*path, name))
        order.append(name)

    for name in sorted(tasks):
        visit(name)
    return order


def _to_mlmd_and_back(value):
    """A metadata value after RecordArtifact and toRuntimeArtifact (converter.go)."""
    if isinstance(value, bool):
        return float(int(value))
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return {"list": value}
    if isinstance(value, dict):
        return {"struct": value}
    return value


def record(output: dict, display_name: str) -> dict:
    """The output artifact as a downstream driver reads it back from MLMD."""
    metadata = {k: _to_mlmd_and_back(v) for k, v in output.get("metadata", {}).items()}
    metadata.setdefault("display_name", display_name)
    metadata.setdefault("store_session_info", json.dumps({"Provider": "local"}))
    return {
        "name": str(next(_ids)),
        "uri": output["uri"],
        "metadata": metadata,
        "type": {"instanceSchema": ""},
    }


def parameter_value(spec_input: dict, run_parameters: dict[str, str]):
    if "componentInputParameter" in spec_input:
        return run_parameters[spec_input["componentInputParameter"]]
    return spec_input["runtimeValue"]["constant"]


def run_pipeline(
    spec: dict,
    pipeline_root: Path,
    run_id: str,
    parameters: dict[str, str] | None = None,
    reuse: dict[str, TaskRun] | None = None,
    timeout: float = 600,
) -> dict[str, TaskRun]:
    """Executes every task of `spec` in dependency order; returns the runs by task name.

    Tasks in `reuse` are not executed: their earlier outputs are used, as KFP does for a task it
    takes from its cache.

    Raises:
        RuntimeError: a task's command failed (its output tail is in the message).
    """
    declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    run_parameters = {k: v["defaultValue"] for k, v in declared.items() if "defaultValue" in v}
    run_parameters.update(parameters or {})
    executors = spec["deploymentSpec"]["executors"]
    runs: dict[str, TaskRun] = {}
    for name in task_order(spec):
        if name in (reuse or {}):
            runs[name] = reuse[name]
            continue
        task = spec["root"]["dag"]["tasks"][name]
        component = spec["components"][task["componentRef"]["name"]]
        container = executors[component["executorLabel"]]["container"]
        task_root = pipeline_root / run_id / name
        inputs = {
            "parameterValues": {
                key: parameter_value(value, run_parameters)
                for key, value in task.get("inputs", {}).get("parameters", {}).items()
            },
            "artifacts": {
                key: {"artifacts": [runs[ref["producerTask"]].outputs[ref["outputArtifactKey"]]]}
                for key, value in task.get("inputs", {}).get("artifacts", {}).items()
                for ref in [value["taskOutputArtifact"]]
            },
        }
        outputs = {
            "artifacts": {
                key: {"artifacts": [{
                    "name": key,
                    "uri": str(task_root / key),
                    "type": definition["artifactType"],
                }]}
                for key, definition in component.get("outputDefinitions", {})
                .get("artifacts", {}).items()
            },
            "outputFile": str(task_root / "output_metadata.json"),
        }
        executor_input = {"inputs": inputs, "outputs": outputs}
        task_root.mkdir(parents=True, exist_ok=True)  # prepareOutputFolders
        as_json = json.dumps(executor_input)
        command = [arg.replace(EXECUTOR_INPUT, as_json)
                   for arg in [*container["command"], *container.get("args", [])]]
        if command[0] == "python":
            command[0] = sys.executable
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=task_root)
        if done.returncode != 0:
            raise RuntimeError(f"task {name} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        executor_output = json.loads(Path(outputs["outputFile"]).read_text())
        recorded = {}
        for key, artifacts in outputs["artifacts"].items():
            provisioned = dict(artifacts["artifacts"][0])
            produced = executor_output.get("artifacts", {}).get(key, {}).get("artifacts", [])
            if produced:  # mergeRuntimeArtifacts
                provisioned["uri"] = produced[0].get("uri") or provisioned["uri"]
                provisioned["metadata"] = produced[0].get("metadata", {})
            recorded[key] = record(provisioned, key)
        runs[name] = TaskRun(name, executor_input, recorded)
    return runs
