"""What both compiled pipelines (training and batch) must satisfy to be taken by Kubeflow."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from click.testing import CliRunner


def normalised(text: str) -> str:
    """The spec text without the one field that changes without a change of ours: TFX's version."""
    return re.sub(r"(?m)^sdkVersion: .*$", "sdkVersion: <tfx>", text)


def compile_with_cli(
    config: Path, folder: Path, file_name: str, *flags: str
) -> tuple[Path, str, dict, dict]:
    """`skewless compile` as a user runs it, into `folder / file_name`: (file, text, spec,
    platform)."""
    from skewless.cli import main

    result = CliRunner().invoke(
        main, ["compile", "--config", str(config), "--output-dir", str(folder), *flags]
    )
    assert result.exit_code == 0, result.output
    path = folder / file_name
    assert f"compiled to {path}" in result.output
    text = path.read_text()
    spec, platform = yaml.safe_load_all(text)
    return path, text, spec, platform


def assert_kfp_takes(path: Path, spec: dict, platform: dict, name: str, inputs: set[str]) -> None:
    """The spec parses strictly into KFP's protos (schema 2.1.0) and loads as kfp.Client would."""
    from google.protobuf import json_format
    from kfp import components
    from kfp.client import client
    from kfp.pipeline_spec import pipeline_spec_pb2

    parsed = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    assert parsed.pipeline_info.name == name
    assert parsed.schema_version == "2.1.0"
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    component = components.load_component_from_file(str(path))
    assert component.name == name
    assert set(component.component_spec.inputs) == inputs
    doc = client._extract_pipeline_yaml(str(path))  # what kfp.Client uses to upload and run
    assert doc.pipeline_spec.default_pipeline_root == "minio://mlpipeline/v2/artifacts"
    assert "kubernetes" in doc.platform_spec.platforms
