"""Serves the candidate on skewless's own server and blesses it only if it loads and answers.

TFX's InfraValidator starts TF Serving in Docker or Kubernetes; this one needs neither. It keeps
TFX's contract, so TFX's Pusher logic reads the result unchanged: an `InfraBlessing` with the
custom property `blessed` (1 or 0), an empty `INFRA_BLESSED` or `INFRA_NOT_BLESSED` file, and,
when blessed, the model with its warm-up requests under `<blessing>/stamped_model` with
`has_model` = 1. What was measured, and why a model was not blessed, are recorded beside them.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import tensorflow as tf
from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.proto import infra_validator_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, path_utils, proto_utils

from skewless.serving.example_rows import complete_rows
from skewless.serving.infra_validation import (
    MODEL_NAME,
    ValidationLimits,
    ValidationReport,
    validate_on_server,
)
from skewless.serving.servable import saved_model_signature
from skewless.serving.warmup import predict_logs, write_warmup_file

MODEL_KEY = standard_component_specs.MODEL_KEY
EXAMPLES_KEY = standard_component_specs.EXAMPLES_KEY
BLESSING_KEY = standard_component_specs.BLESSING_KEY
VALIDATION_SPEC_KEY = standard_component_specs.VALIDATION_SPEC_KEY
REQUEST_SPEC_KEY = standard_component_specs.REQUEST_SPEC_KEY
MAX_LATENCY_MS_KEY = "max_latency_ms"

# TFX's names (tfx/components/infra_validator/executor.py, tfx/components/pusher/executor.py).
BLESSED_PROPERTY = "blessed"
HAS_MODEL_PROPERTY = "has_model"
BLESSED_FILE = "INFRA_BLESSED"
NOT_BLESSED_FILE = "INFRA_NOT_BLESSED"
# skewless's additions: why a model was not blessed (one line) and what was measured.
PROBLEM_PROPERTY = "problem"
LOAD_SECONDS_PROPERTY = "load_seconds"
LATENCY_P50_PROPERTY = "latency_ms_p50"
LATENCY_MAX_PROPERTY = "latency_ms_max"
REQUESTS_PROPERTY = "requests"

DEFAULT_SPLIT = "eval"


def request_rows(examples: types.Artifact, split: str, names, limit: int) -> list[dict]:
    """Up to `limit` rows of a split that carry every input of the signature."""
    split_uri = artifact_utils.get_split_uri([examples], split)
    files = sorted(tf.io.gfile.glob(os.path.join(split_uri, "*")))
    return complete_rows(files, names, limit)


def record(blessing: types.Artifact, report: ValidationReport) -> None:
    """Marks the blessing as TFX's InfraValidator does, with skewless's measurements."""
    io_utils.write_string_file(
        os.path.join(blessing.uri, BLESSED_FILE if report.passed else NOT_BLESSED_FILE), "")
    blessing.set_int_custom_property(BLESSED_PROPERTY, int(report.passed))
    blessing.set_int_custom_property(HAS_MODEL_PROPERTY, int(report.passed))
    blessing.set_string_custom_property(PROBLEM_PROPERTY, report.problem)
    blessing.set_int_custom_property(REQUESTS_PROPERTY, report.requests)
    if report.load_seconds == report.load_seconds:  # not NaN: the server started
        blessing.set_float_custom_property(LOAD_SECONDS_PROPERTY, report.load_seconds)
    if report.latency_ms_max is not None:
        blessing.set_float_custom_property(LATENCY_P50_PROPERTY, report.latency_ms_p50)
        blessing.set_float_custom_property(LATENCY_MAX_PROPERTY, report.latency_ms_max)


def _validate(model_dir: str, examples: types.Artifact, request_spec, limits) -> ValidationReport:
    """Writes the warm-up requests into `model_dir`, then serves and queries it."""
    try:
        signature = saved_model_signature(model_dir)
    except KeyError as error:
        return ValidationReport(float("nan"), 0, None, None, f"the model cannot serve: {error}")
    split = request_spec.split_name or DEFAULT_SPLIT
    rows = request_rows(examples, split, sorted(signature.inputs), request_spec.num_examples)
    if not rows:
        return ValidationReport(float("nan"), 0, None, None,
                                f"no row of the {split} split has every input of the model")
    if request_spec.make_warmup:
        write_warmup_file(model_dir, predict_logs(MODEL_NAME, signature, rows))
    return validate_on_server(model_dir, rows, limits)


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])
        validation_spec = infra_validator_pb2.ValidationSpec()
        proto_utils.json_to_proto(exec_properties[VALIDATION_SPEC_KEY], validation_spec)
        request_spec = infra_validator_pb2.RequestSpec()
        proto_utils.json_to_proto(exec_properties[REQUEST_SPEC_KEY], request_spec)
        limits = ValidationLimits(
            max_loading_seconds=validation_spec.max_loading_time_seconds,
            max_latency_ms=exec_properties[MAX_LATENCY_MS_KEY],
        )
        # The candidate is validated as it will be pushed: a copy carrying its warm-up file.
        stamped = path_utils.stamped_model_path(blessing.uri)
        io_utils.copy_dir(
            path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model)),
            stamped,
        )
        report = _validate(stamped, examples, request_spec, limits)
        if not report.passed:
            shutil.rmtree(stamped, ignore_errors=True)
        record(blessing, report)
        logging.info("Infra validation: %s (load %.2f s, %d requests, slowest %s ms)",
                     "passed" if report.passed else f"FAILED: {report.problem}",
                     report.load_seconds, report.requests, report.latency_ms_max)
