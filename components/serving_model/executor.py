"""Picks a pushed model version and the schema it was trained on, as the data seen in serving
must match it: the SERVING environment of the schema inside the model."""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx import types
from tfx.components.pusher import executor as tfx_pusher
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from skewless.components.pusher.executor import existing_versions
from skewless.transforms.signatures import SCHEMA_FILE, SERVING, SERVING_DEFAULT

MODEL_BASE_PATH_KEY = "model_base_path"
VERSION_KEY = "version"
MODEL_KEY = "model"
SCHEMA_KEY = "schema"
# The custom properties TFX's Pusher sets on a PushedModel, by TFX's own (private) names.
PUSHED = tfx_pusher._PUSHED_KEY  # noqa: SLF001
PUSHED_VERSION = tfx_pusher._PUSHED_VERSION_KEY  # noqa: SLF001
PUSHED_DESTINATION = tfx_pusher._PUSHED_DESTINATION_KEY  # noqa: SLF001


class ModelVersionError(ValueError):
    """The requested model version is not pushed, or is not a model skewless can score with."""


def resolve_version(model_base_path: str, version: int | None) -> tuple[int, str]:
    """The version to use (the newest when None) and its folder.

    Raises:
        ModelVersionError: nothing is pushed there, or not that version.
    """
    versions = existing_versions(model_base_path)
    if not versions:
        raise ModelVersionError(f"no model version is pushed in {model_base_path}")
    if version is None:
        version = versions[-1]
    if version not in versions:
        listed = ", ".join(map(str, versions[-5:]))
        raise ModelVersionError(
            f"model version {version} does not exist in {model_base_path} (pushed: {listed})"
        )
    return version, os.path.join(model_base_path, str(version))


def model_schema(version_dir: str) -> schema_pb2.Schema:
    """The raw data schema exported inside a model version.

    Raises:
        ModelVersionError: the version carries no schema (exported before skewless kept one).
    """
    path = os.path.join(version_dir, SCHEMA_FILE)
    if not tf.io.gfile.exists(path):
        raise ModelVersionError(
            f"{version_dir} has no {SCHEMA_FILE}; it was exported by an older skewless: "
            "run the pipeline again to push a model that carries its schema"
        )
    return text_format.Parse(tf.io.gfile.GFile(path).read(), schema_pb2.Schema())


def serving_schema(schema: schema_pb2.Schema) -> schema_pb2.Schema:
    """The schema as data must meet it in the SERVING environment, without environments.

    ExampleValidator validates without an environment, so the features that are not in SERVING
    (the label's columns) lose their presence constraint: they may be absent, and if present
    must still have their type and domain.
    """
    serving = schema_pb2.Schema()
    serving.CopyFrom(schema)
    del serving.default_environment[:]
    for feature in serving.feature:
        in_serving = (SERVING in feature.in_environment if feature.in_environment
                      else SERVING not in feature.not_in_environment)
        if not in_serving:
            feature.ClearField("presence")
        del feature.in_environment[:]
        del feature.not_in_environment[:]
    return serving


def raw_feature_names(version_dir: str) -> list[str]:
    """The raw features the model takes: its `serving_default` signature's inputs."""
    path = os.path.join(version_dir, "saved_model.pb")
    proto = saved_model_pb2.SavedModel.FromString(tf.io.gfile.GFile(path, "rb").read())
    return sorted(proto.meta_graphs[0].signature_def[SERVING_DEFAULT].inputs)


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        requested = exec_properties.get(VERSION_KEY) or ""
        version, version_dir = resolve_version(
            exec_properties[MODEL_BASE_PATH_KEY], int(requested) if requested else None
        )
        schema = serving_schema(model_schema(version_dir))
        model = artifact_utils.get_single_instance(output_dict[MODEL_KEY])
        model.set_int_custom_property(PUSHED, 1)
        model.set_int_custom_property(PUSHED_VERSION, version)
        model.set_string_custom_property(PUSHED_DESTINATION, version_dir)
        schema_artifact = artifact_utils.get_single_instance(output_dict[SCHEMA_KEY])
        tf.io.gfile.makedirs(schema_artifact.uri)
        with tf.io.gfile.GFile(os.path.join(schema_artifact.uri, "schema.pbtxt"), "w") as f:
            f.write(text_format.MessageToString(schema))
