"""The command of every task in the compiled Kubeflow pipeline: TFX's v2 container entrypoint,
given what open-source Kubeflow Pipelines 2.x passes in the form TFX expects.

TFX's entrypoint (`kubeflow_v2_run_executor`) is written for Vertex AI Pipelines. On the
open-source backend (kubeflow/pipelines, `backend/src/v2`) three things differ, and each is
translated here before TFX reads the executor input:

- An input artifact produced upstream arrives with an empty `instanceSchema`
  (`metadata/client.go`, GetOutputArtifactsByExecutionId: `Schema: ""`), or with a
  `system.*` schema title; TFX would then not know the artifact's class. The type is taken from
  the component's own inputs spec, which the compiled spec passes to every task.
- URIs are object-store URIs (`minio://`, `s3://`) that the launcher downloads to and uploads
  from local folders (`component/launcher_v2.go`, LocalPathForURI); TFX reads them with gfile,
  which knows neither scheme. They become those local paths, and the URIs TFX writes back into the
  executor output become remote again, since the launcher records what it finds there
  (`mergeRuntimeArtifacts`).
- ExampleGen's `lifecycle.preCacheCheck` (the driver that resolves span, version and the input
  fingerprint) is never run by the backend. `--example_gen_driver` runs that driver in this
  process before the executor, so span and version patterns keep working.

Usage (what the compiled spec runs):
    python -m skewless.pipeline.kubeflow_entrypoint [--example_gen_driver] \
        --executor_class_path ... --json_serialized_invocation_args '{{$}}' \
        --json_serialized_inputs_spec_args ... [beam args]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

# The launcher's local folder for each object-store scheme (launcher_v2.go, LocalPathForURI).
# gs:// is left alone: gfile reads and writes it directly.
LOCAL_MOUNTS = {"minio://": "/minio/", "s3://": "/s3/"}
EXAMPLE_GEN_DRIVER_FLAG = "--example_gen_driver"
INVOCATION_FLAG = "--json_serialized_invocation_args"
INPUTS_SPEC_FLAG = "--json_serialized_inputs_spec_args"


def local_path(uri: str) -> str:
    """The local folder where the KFP launcher places an object-store URI (others unchanged)."""
    for scheme, mount in LOCAL_MOUNTS.items():
        if uri.startswith(scheme):
            return mount + uri[len(scheme):]
    return uri


def remote_uri(path: str) -> str:
    """The object-store URI of a launcher's local folder (inverse of `local_path`)."""
    for scheme, mount in LOCAL_MOUNTS.items():
        if path.startswith(mount):
            return scheme + path[len(mount):]
    return path


def _names_a_tfx_type(type_schema: pipeline_spec_pb2.ArtifactTypeSchema) -> bool:
    kind = type_schema.WhichOneof("kind")
    if kind == "instance_schema":
        return type_schema.instance_schema.strip() != ""
    if kind == "schema_title":
        return not type_schema.schema_title.startswith("system.")
    return False


def for_tfx(
    executor_input: pipeline_spec_pb2.ExecutorInput,
    inputs_spec: pipeline_spec_pb2.ComponentInputsSpec,
) -> pipeline_spec_pb2.ExecutorInput:
    """The executor input as TFX's entrypoint reads it: artifact types from the component's
    inputs spec where the backend sent none (or a `system.*` one), and local paths for URIs.

    Raises:
        ValueError: an input artifact has no type and the inputs spec declares none for it.
    """
    fixed = pipeline_spec_pb2.ExecutorInput()
    fixed.CopyFrom(executor_input)
    for name, artifacts in fixed.inputs.artifacts.items():
        for artifact in artifacts.artifacts:
            if not _names_a_tfx_type(artifact.type):
                if name not in inputs_spec.artifacts:
                    raise ValueError(
                        f"input artifact {name!r} has no TFX type and the component's inputs "
                        "spec declares none"
                    )
                artifact.type.CopyFrom(inputs_spec.artifacts[name].artifact_type)
            artifact.uri = local_path(artifact.uri)
    for artifacts in fixed.outputs.artifacts.values():
        for artifact in artifacts.artifacts:
            artifact.uri = local_path(artifact.uri)
    return fixed


def for_launcher(executor_output: pipeline_spec_pb2.ExecutorOutput) -> None:
    """Gives the executor output's artifacts their object-store URIs back, in place."""
    for artifacts in executor_output.artifacts.values():
        for artifact in artifacts.artifacts:
            artifact.uri = remote_uri(artifact.uri)


def _flag_value(argv: list[str], flag: str) -> tuple[int, str] | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return i + 1, argv[i + 1]
        if arg.startswith(flag + "="):
            return i, arg[len(flag) + 1:]
    return None


def translate_argv(argv: Sequence[str]) -> tuple[list[str], bool, str]:
    """TFX's arguments with the executor input made readable to TFX.

    Returns:
        (arguments for TFX's entrypoint, whether to run ExampleGen's driver first, the path of
        the executor output file).

    Raises:
        ValueError: the invocation arguments are missing.
    """
    args = [a for a in argv if a != EXAMPLE_GEN_DRIVER_FLAG]
    found = _flag_value(args, INVOCATION_FLAG)
    if found is None:
        raise ValueError(f"{INVOCATION_FLAG} is required")
    index, text = found
    executor_input = json_format.Parse(
        text, pipeline_spec_pb2.ExecutorInput(), ignore_unknown_fields=True
    )
    inputs_spec = pipeline_spec_pb2.ComponentInputsSpec()
    spec_found = _flag_value(args, INPUTS_SPEC_FLAG)
    if spec_found is not None:
        json_format.Parse(spec_found[1], inputs_spec, ignore_unknown_fields=True)
    fixed = json_format.MessageToJson(for_tfx(executor_input, inputs_spec))
    args[index] = fixed if args[index] == text else f"{INVOCATION_FLAG}={fixed}"
    return args, EXAMPLE_GEN_DRIVER_FLAG in argv, executor_input.outputs.output_file


def _run(parsed, example_gen_driver: bool, output_file: str) -> None:
    from tfx.dsl.io import fileio
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor as run_executor
    from tfx.orchestration.kubeflow.v2.file_based_example_gen import driver

    if example_gen_driver:
        # The driver writes span, version, fingerprint and the resolved input config into the
        # output file, which TFX's entrypoint reads back as execution properties.
        driver.main(parsed[0])
    run_executor.main(parsed)
    with fileio.open(output_file, "rb") as f:
        executor_output = json_format.Parse(
            f.read(), pipeline_spec_pb2.ExecutorOutput(), ignore_unknown_fields=True
        )
    for_launcher(executor_output)
    with fileio.open(output_file, "wb") as f:
        f.write(json_format.MessageToJson(executor_output))


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the task: ExampleGen's driver if asked, TFX's executor, then the URI fix-up."""
    from absl import app
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor as run_executor

    argv = list(sys.argv if argv is None else argv)
    args, example_gen_driver, output_file = translate_argv(argv[1:])
    # TFX's own flag parser, as its entrypoint uses it: the rest of the arguments are Beam's.
    app.run(
        lambda parsed: _run(parsed, example_gen_driver, output_file),
        argv=[argv[0], *args],
        flags_parser=run_executor._parse_flags,  # noqa: SLF001 - TFX's entrypoint's parser
    )


if __name__ == "__main__":
    main()
