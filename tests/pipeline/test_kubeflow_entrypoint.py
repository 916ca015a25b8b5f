"""The Kubeflow task entrypoint: what open-source KFP passes, translated for TFX's entrypoint."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from skewless.pipeline.kubeflow_entrypoint import (
    for_launcher,
    for_tfx,
    local_path,
    remote_uri,
    translate_argv,
)

MODEL_SCHEMA = "title: tfx.Model\ntype: object\n"
INPUTS_SPEC = {"artifacts": {"model": {"artifactType": {"instanceSchema": MODEL_SCHEMA}}}}


def _executor_input(input_type: dict) -> dict:
    """An ExecutorInput as the open-source driver writes it (protojson, camelCase)."""
    return {
        "inputs": {
            "artifacts": {"model": {"artifacts": [{
                "name": "17", "uri": "minio://mlpipeline/v2/artifacts/run/Trainer/1/model",
                "type": input_type, "metadata": {"display_name": "model"}}]}},
            "parameterValues": {"push_destination": "{}"},
        },
        "outputs": {
            "artifacts": {"pushed_model": {"artifacts": [{
                "name": "pushed_model", "uri": "s3://bucket/run/Pusher/2/pushed_model",
                "type": {"instanceSchema": "title: tfx.PushedModel\ntype: object\n"}}]}},
            "outputFile": "/tmp/kfp_outputs/output_metadata.json",
        },
    }


def _parse(data: dict, message):
    return json_format.ParseDict(data, message, ignore_unknown_fields=True)


@pytest.mark.parametrize("sent", [{"instanceSchema": ""}, {"schemaTitle": "system.Model"},
                                  {"schemaTitle": "system.Artifact"}, {}])
def test_input_types_the_backend_loses_come_from_the_inputs_spec(sent):
    fixed = for_tfx(_parse(_executor_input(sent), pipeline_spec_pb2.ExecutorInput()),
                    _parse(INPUTS_SPEC, pipeline_spec_pb2.ComponentInputsSpec()))
    [model] = fixed.inputs.artifacts["model"].artifacts
    assert model.type.instance_schema == MODEL_SCHEMA
    assert model.uri == "/minio/mlpipeline/v2/artifacts/run/Trainer/1/model"
    [pushed] = fixed.outputs.artifacts["pushed_model"].artifacts
    assert pushed.uri == "/s3/bucket/run/Pusher/2/pushed_model"


def test_a_tfx_type_that_arrives_is_kept():
    sent = {"instanceSchema": "title: tfx.Examples\ntype: object\n"}
    fixed = for_tfx(_parse(_executor_input(sent), pipeline_spec_pb2.ExecutorInput()),
                    _parse(INPUTS_SPEC, pipeline_spec_pb2.ComponentInputsSpec()))
    assert fixed.inputs.artifacts["model"].artifacts[0].type.instance_schema == sent[
        "instanceSchema"]


def test_an_untyped_input_the_spec_does_not_declare_is_a_clear_error():
    with pytest.raises(ValueError, match="input artifact 'model' has no TFX type and the "
                                         "component's inputs spec declares none"):
        for_tfx(_parse(_executor_input({"instanceSchema": ""}),
                       pipeline_spec_pb2.ExecutorInput()), pipeline_spec_pb2.ComponentInputsSpec())


def test_uris_map_to_the_launchers_local_folders_and_back():
    for uri in ("minio://mlpipeline/a/b", "s3://bucket/a"):
        assert remote_uri(local_path(uri)) == uri
    assert local_path("gs://bucket/a") == "gs://bucket/a"
    assert local_path("/mnt/models/taxi") == "/mnt/models/taxi"
    output = _parse({"artifacts": {"examples": {"artifacts": [
        {"uri": "/minio/mlpipeline/run/ExampleGen/examples"}]}}},
        pipeline_spec_pb2.ExecutorOutput())
    for_launcher(output)
    assert output.artifacts["examples"].artifacts[0].uri == "minio://mlpipeline/run/ExampleGen/examples"


def test_argv_is_tfxs_with_the_translated_input():
    argv = ["--example_gen_driver", "--executor_class_path", "a.B",
            "--json_serialized_invocation_args", json.dumps(_executor_input({})),
            "--json_serialized_inputs_spec_args", json.dumps(INPUTS_SPEC),
            "--direct_running_mode=in_memory"]
    args, driver, output_file = translate_argv(argv)
    assert driver and output_file == "/tmp/kfp_outputs/output_metadata.json"
    assert args[0] == "--executor_class_path" and args[-1] == "--direct_running_mode=in_memory"
    sent = json.loads(args[args.index("--json_serialized_invocation_args") + 1])
    assert sent["inputs"]["artifacts"]["model"]["artifacts"][0]["type"] == {
        "instanceSchema": MODEL_SCHEMA}
    with pytest.raises(ValueError, match="--json_serialized_invocation_args is required"):
        translate_argv(["--executor_class_path", "a.B"])
