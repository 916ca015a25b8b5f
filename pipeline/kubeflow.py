"""Compiles the pipeline for Kubeflow Pipelines (KFP v2 PipelineSpec) or Vertex AI (PipelineJob).

The compiled pipeline is the one `skewless run` runs (`create_pipeline`), with the config's
cluster locations (the `kubeflow` section) in place of its local paths, the data root and the
train/eval arguments as runtime parameters, and every task running the project's pipeline image,
where user code is imported from the installed package. MLMD is the KFP backend's own store.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Literal

import yaml

from skewless.pipeline.config import ConfigError, check_label
from skewless.pipeline.files import write_text_atomically
from skewless.pipeline.run_config import PipelineConfig

Target = Literal["kubeflow", "vertex", "batch"]
# Runtime parameters of the compiled pipeline; train/eval args hold TrainArgs/EvalArgs as JSON.
DATA_ROOT = "data_root"
TRAIN_ARGS = "train_args"
EVAL_ARGS = "eval_args"
KUBERNETES_PLATFORM = "kubernetes"
# Runtime parameters of the compiled batch pipeline (data_root too): where the predictions go,
# and the pushed version to score with ("" for the newest).
OUTPUT_PATH = "output_path"
MODEL_VERSION = "model_version"
# What every task runs: TFX's v2 entrypoint behind the shim for open-source KFP's executor input.
TFX_ENTRYPOINT = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
ENTRYPOINT = "skewless.pipeline.kubeflow_entrypoint"
EXAMPLE_GEN_DRIVER_FLAG = "--example_gen_driver"


def spec_path(config: PipelineConfig, output_dir: Path, target: Target = "kubeflow") -> Path:
    """Where `compile` writes: `<name>-pipeline.yaml` (KFP) or `<name>-pipeline.json` (Vertex)."""
    suffix = ".json" if target == "vertex" else ".yaml"
    return output_dir / f"{pipeline_name_of(config, target)}-pipeline{suffix}"


def pipeline_name_of(config: PipelineConfig, target: Target) -> str:
    """The compiled pipeline's name: the config's, or its batch pipeline's."""
    from skewless.pipeline.batch import batch_pipeline_name

    return batch_pipeline_name(config) if target == "batch" else config.pipeline.name


def volume_of(config: PipelineConfig, path: str):
    """The kubeflow volume whose mount holds `path`, or None."""
    for volume in config.kubeflow.volumes:
        mount = volume.mount_path.rstrip("/")
        if path == mount or path.startswith(mount + "/"):
            return volume
    return None


def check_cluster_config(config: PipelineConfig) -> None:
    """Checks what only the combination of sections can show.

    Raises:
        ConfigError: a local-only input (curated schema) or a push volume the serving
            Deployment does not mount.
    """
    src = config.source
    if config.schema_.curated is not None:
        raise ConfigError(
            f"{src}: schema.curated: {config.schema_.curated} exists only on this machine; "
            "for Kubeflow, bake the schema into the pipeline image or leave schema.curated empty"
        )
    volume = volume_of(config, config.kubeflow.push_dir)
    claim = config.deployment.model_volume.claim_name
    if volume is not None and volume.claim_name != claim:
        raise ConfigError(
            f"{src}: kubeflow.push_dir: {config.kubeflow.push_dir} is on volume "
            f"{volume.claim_name!r} but TF Serving reads deployment.model_volume.claim_name "
            f"{claim!r}"
        )


def with_label_classes(config: PipelineConfig) -> PipelineConfig:
    """The config with its label classes, which the compiled pipeline carries.

    They come from `label.classes`, or from the data when it is on this machine.

    Raises:
        ConfigError: a multiclass label lists no classes and the data is not here to read them.
    """
    label = config.label
    needs_classes = label.task == "multiclass" or label.positive is not None
    if label.classes is not None or not needs_classes:
        return config
    if config.data.path.exists():
        return check_label(config)[0]
    if label.task == "multiclass":
        raise ConfigError(
            f"{config.source}: label.classes: list the classes; the compiled pipeline carries "
            f"them, and the data ({config.data.path}) is not on this machine to read them from"
        )
    return config


def cluster_model_push_dir(config: PipelineConfig) -> str:
    """The model's base path as the pipeline's Pusher sees it on the cluster."""
    return posixpath.join(config.kubeflow.push_dir, config.serving.model_name)


def runtime_parameters(config: PipelineConfig) -> dict[str, str]:
    """The compiled pipeline's runtime parameters and their defaults from the config."""
    return {
        DATA_ROOT: config.kubeflow.data_root,
        TRAIN_ARGS: json.dumps({"num_steps": config.model.train_steps}),
        EVAL_ARGS: json.dumps({"num_steps": config.model.eval_steps}),
    }


def kubeflow_pipeline(config: PipelineConfig):
    """The TFX pipeline with cluster locations and runtime parameters.

    Args:
        config: the loaded config.

    Returns:
        The TFX pipeline, ready for KubeflowV2DagRunner.

    Raises:
        ConfigError: see `check_cluster_config`.
    """
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration import data_types

    from skewless.components.data_formats import input_location
    from skewless.pipeline.build import Placement, create_pipeline

    check_cluster_config(config)
    config = with_label_classes(config)
    kubeflow = config.kubeflow
    parameters = {
        name: data_types.RuntimeParameter(name, ptype=str, default=default)
        for name, default in runtime_parameters(config).items()
    }
    placement = Placement(
        pipeline_root=kubeflow.pipeline_root,
        model_push_dir=cluster_model_push_dir(config),
        input_base=parameters[DATA_ROOT],
        # The file name (or `*.<suffix>` for a folder) is that of the local data path.
        input_pattern=input_location(config.data.path, config.data.format)[1],
        train_args=parameters[TRAIN_ARGS],
        eval_args=parameters[EVAL_ARGS],
        beam_args=kubeflow.beam_args,
        # Not the config's SQLite file: KubeflowV2DagRunner ignores the connection, and each task
        # records into the MLMD store of the KFP backend it runs on.
        metadata_connection_config=metadata_store_pb2.ConnectionConfig(),
    )
    return create_pipeline(config, placement)


def batch_runtime_parameters(config: PipelineConfig) -> dict[str, str]:
    """The compiled batch pipeline's runtime parameters and their defaults.

    The new data is a folder of `data.format` files (default `<kubeflow.data_root>/batch`).
    """
    data_root = posixpath.join(config.kubeflow.data_root, "batch")
    return {
        DATA_ROOT: data_root,
        OUTPUT_PATH: posixpath.join(config.kubeflow.data_root, "predictions",
                                    f"{config.pipeline.name}.parquet"),
        MODEL_VERSION: "",
    }


def kubeflow_batch_pipeline(config: PipelineConfig):
    """The `<name>-batch` TFX pipeline with cluster locations and runtime parameters.

    A scheduled run replaces the previous predictions file (atomically); each run's output is
    recorded in MLMD with its input data and model version.
    """
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration import data_types

    from skewless.components.data_formats import FILE_ENDINGS
    from skewless.pipeline.batch import BatchJob, create_batch_pipeline

    check_cluster_config(config)
    parameters = {
        name: data_types.RuntimeParameter(name, ptype=str, default=default)
        for name, default in batch_runtime_parameters(config).items()
    }
    job = BatchJob(
        input_base=parameters[DATA_ROOT],
        input_pattern=f"*{FILE_ENDINGS[config.data.format][0]}",
        data_format=config.data.format,
        model_base_path=cluster_model_push_dir(config),
        model_version=parameters[MODEL_VERSION],
        output_path=parameters[OUTPUT_PATH],
        overwrite=True,
    )
    return create_batch_pipeline(
        config, job,
        pipeline_root=config.kubeflow.pipeline_root,
        beam_args=config.kubeflow.beam_args,
        metadata_connection_config=metadata_store_pb2.ConnectionConfig(),
    )


def compile_job(config: PipelineConfig, target: Target = "kubeflow") -> dict:
    """Compiles with TFX's KubeflowV2DagRunner into a PipelineJob dict (`pipelineSpec` inside):
    the training pipeline, or for target `batch` the batch inference pipeline.

    Raises:
        ConfigError: see `check_cluster_config`.
    """
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner as v2

    runner = v2.KubeflowV2DagRunner(
        v2.KubeflowV2DagRunnerConfig(
            display_name=pipeline_name_of(config, target),
            default_image=config.kubeflow.image,
            # Schema 2.1 is what kfp 2.x backends and loaders read.
            use_pipeline_spec_2_1=True,
        )
    )
    if target == "batch":
        defaults, pipeline = batch_runtime_parameters(config), kubeflow_batch_pipeline(config)
    else:
        defaults, pipeline = runtime_parameters(config), kubeflow_pipeline(config)
    job = runner.run(pipeline, parameter_values=defaults, write_out=False)
    # TFX puts defaults only into Vertex's runtimeConfig; KFP reads them from the spec.
    declared = job["pipelineSpec"]["root"]["inputDefinitions"]["parameters"]
    for name, default in defaults.items():
        declared[name].update(defaultValue=default, isOptional=True)
    # KFP runs use it unless a run names another root; Vertex reads runtimeConfig instead.
    job["pipelineSpec"]["defaultPipelineRoot"] = config.kubeflow.pipeline_root
    job.setdefault("runtimeConfig", {})["gcsOutputDirectory"] = config.kubeflow.pipeline_root
    return job


def for_open_source_kfp(pipeline_spec: dict) -> dict:
    """The spec as open-source KFP 2.x runs it, changed in place and returned.

    Every container runs `skewless.pipeline.kubeflow_entrypoint` instead of TFX's entrypoint.
    The backend ignores `lifecycle.preCacheCheck`, so ExampleGen's driver moves into its task
    (`--example_gen_driver`), and that task is never cached: nothing but the driver could tell
    that the files under an unchanged data root have changed.
    """
    uncached = set()
    for label, executor in pipeline_spec["deploymentSpec"]["executors"].items():
        container = executor.get("container")
        if container is None:
            continue
        if container["command"][-1] == TFX_ENTRYPOINT:
            container["command"] = [*container["command"][:-1], ENTRYPOINT]
        if container.pop("lifecycle", None) is not None:
            container["args"] = [EXAMPLE_GEN_DRIVER_FLAG, *container["args"]]
            uncached.add(label)
    components = pipeline_spec["components"]
    for task in pipeline_spec["root"]["dag"]["tasks"].values():
        if components[task["componentRef"]["name"]]["executorLabel"] in uncached:
            task["cachingOptions"] = {"enableCache": False}
    return pipeline_spec


def platform_spec(config: PipelineConfig, pipeline_spec: dict) -> dict | None:
    """The kubernetes PlatformSpec that mounts the config's volumes into every container task."""
    volumes = config.kubeflow.volumes
    if not volumes:
        return None
    executors = {
        label: {"pvcMount": [{"constant": v.claim_name, "mountPath": v.mount_path}
                             for v in volumes]}
        for label, executor in sorted(pipeline_spec["deploymentSpec"]["executors"].items())
        if "container" in executor
    }
    return {"platforms": {KUBERNETES_PLATFORM: {"deploymentSpec": {"executors": executors}}}}


def _header(config: PipelineConfig, pipeline_spec: dict) -> str:
    source = config.source.name if config.source is not None else "a config"
    lines = [
        "# PIPELINE DEFINITION",
        f"# Name: {pipeline_spec['pipelineInfo']['name']}",
        f"# Description: skewless pipeline compiled from {source} by `skewless compile`",
        "# Inputs:",
    ]
    parameters = pipeline_spec["root"].get("inputDefinitions", {}).get("parameters", {})
    for name, parameter in sorted(parameters.items()):
        default = parameter.get("defaultValue")
        shown = f" [Default: {default!r}]" if default is not None else ""
        kind = {"STRING": "str", "NUMBER_INTEGER": "int"}.get(parameter["parameterType"], "")
        lines.append(f"#  {name}: {kind or parameter['parameterType']}{shown}")
    return "\n".join(lines) + "\n"


def render(config: PipelineConfig, target: Target = "kubeflow") -> str:
    """The compiled pipeline as the text `compile` writes.

    Args:
        config: the loaded config.
        target: `kubeflow` for the bare PipelineSpec YAML (plus a kubernetes PlatformSpec
            document when volumes are configured), `vertex` for a Vertex AI PipelineJob JSON,
            `batch` for the batch inference pipeline's PipelineSpec YAML.

    Returns:
        The file content.

    Raises:
        ConfigError: the config cannot be compiled for the target.
    """
    job = compile_job(config, target)
    spec = job["pipelineSpec"]
    if target == "vertex":
        if not config.kubeflow.pipeline_root.startswith("gs://"):
            raise ConfigError(
                f"{config.source}: kubeflow.pipeline_root: Vertex AI needs a gs:// root, "
                f"got {config.kubeflow.pipeline_root!r}"
            )
        # Telemetry labels name the compiling machine's Python and TFX builds; not ours to send.
        job.pop("labels", None)
        return json.dumps(job, indent=2, sort_keys=True) + "\n"
    documents = [for_open_source_kfp(spec)]
    platform = platform_spec(config, spec)
    if platform is not None:
        documents.append(platform)
    body = yaml.safe_dump_all(documents, sort_keys=True)
    return _header(config, spec) + body


def compile_pipeline(
    config: PipelineConfig, output_dir: Path, target: Target = "kubeflow"
) -> Path:
    """Writes the compiled pipeline into `output_dir` and returns the file.

    Raises:
        ConfigError: the config cannot be compiled, or the result would name a path of this
            machine.
    """
    text = render(config, target)
    check_no_local_paths(config, text)
    destination = spec_path(config, output_dir, target)
    write_text_atomically(destination, text)
    return destination


def local_paths(config: PipelineConfig) -> dict[str, str]:
    """The config's paths on this machine, by key: none of them may reach a cluster."""
    data = config.data.path
    paths = {
        "pipeline.output_dir": config.pipeline.output_dir,
        # A data file's folder too: it is what a data root copied from it would name.
        "data.path": data.parent if data.suffix else data,
        "serving.push_dir": config.serving.push_dir,
        "metadata.sqlite": config.metadata.sqlite,
    }
    if config.source is not None:
        paths["the config's folder"] = config.source.parent
    return {key: str(path) for key, path in paths.items() if path is not None}


def check_no_local_paths(config: PipelineConfig, text: str) -> None:
    """Fails if a compiled pipeline names a path that exists only on this machine.

    Raises:
        ConfigError: names the config key whose path leaked.
    """
    for key, path in local_paths(config).items():
        if path in text:
            raise ConfigError(
                f"{config.source}: {key}: the compiled pipeline would name {path}, a path of "
                "this machine; give the cluster location in the kubeflow section"
            )
