"""Batch inference: the `<name>-batch` pipeline that scores a new data file with a pushed model.

ExampleGen reads the new data (no label needed) as training reads its data; StatisticsGen and
ExampleValidator check it against the schema inside the model, in the SERVING environment;
RowCountCheck proves no row was lost on the way in; BatchInference scores with the model's
`serving_tf_example` signature in Beam and writes the predictions. Every step is in MLMD.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.orchestration import data_types

from skewless.components import data_formats
from skewless.components.anomaly_gate.component import AnomalyGate
from skewless.components.batch_inference.component import BatchInference
from skewless.components.batch_inference.executor import OUTPUT_FORMATS
from skewless.components.row_count_check.component import RowCountCheck
from skewless.components.serving_model.component import ServingModel
from skewless.components.serving_model.executor import (
    ModelVersionError,
    model_schema,
    raw_feature_names,
    resolve_version,
)
from skewless.pipeline.build import (
    ANOMALY_GATE,
    EXAMPLE_GEN,
    EXAMPLE_VALIDATOR,
    ROW_COUNT_CHECK,
    STATISTICS_GEN,
    example_gen_class,
    local_metadata,
)
from skewless.pipeline.config import ConfigError
from skewless.pipeline.run_config import PipelineConfig

# Node ids of the batch pipeline besides those it shares with the training pipeline.
SERVING_MODEL = "ServingModel"
BATCH_INFERENCE = "BatchInference"
BATCH_SPLIT = "batch"

Text = str | data_types.RuntimeParameter


def batch_pipeline_name(config: PipelineConfig) -> str:
    return f"{config.pipeline.name}-batch"


@dataclasses.dataclass(frozen=True)
class BatchJob:
    """One scoring job: which data, which model version, where the predictions go.

    Locations are strings (or Kubeflow runtime parameters) so that gs:// URIs survive.
    `model_version` is a version number as text, or "" for the newest pushed version.
    """

    input_base: Text
    input_pattern: str
    data_format: str
    model_base_path: str
    model_version: Text
    output_path: Text
    output_format: str = "parquet"
    keep: tuple[str, ...] = ()
    overwrite: bool = False
    allow_anomalies: bool = False


def create_batch_pipeline(
    config: PipelineConfig,
    job: BatchJob,
    *,
    pipeline_root: str,
    beam_args: tuple[str, ...],
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None,
) -> tfx.dsl.Pipeline:
    """The `<name>-batch` pipeline: ExampleGen → StatisticsGen → ExampleValidator (against the
    model's SERVING schema) → AnomalyGate, RowCountCheck → BatchInference. Never cached: each
    night's file is scored anew."""
    examples = example_gen_class(job.data_format)(
        input_base=job.input_base,
        input_config=tfx.proto.Input(splits=[
            tfx.proto.Input.Split(name=BATCH_SPLIT, pattern=job.input_pattern)]),
        # No split config: one output split, the input's, rather than ExampleGen's train/eval.
        output_config=tfx.proto.Output(),
    ).with_id(EXAMPLE_GEN)
    statistics = tfx.components.StatisticsGen(examples=examples.outputs["examples"]).with_id(
        STATISTICS_GEN)
    model = ServingModel(model_base_path=job.model_base_path,
                         version=job.model_version).with_id(SERVING_MODEL)
    validator = tfx.components.ExampleValidator(
        statistics=statistics.outputs["statistics"], schema=model.outputs["schema"]
    ).with_id(EXAMPLE_VALIDATOR)
    gate = AnomalyGate(anomalies=validator.outputs["anomalies"],
                       stop_on_anomalies=not job.allow_anomalies).with_id(ANOMALY_GATE)
    row_check = RowCountCheck(
        examples=examples.outputs["examples"],
        statistics=statistics.outputs["statistics"],
        input_base=job.input_base,
        input_pattern=job.input_pattern,
        input_format=job.data_format,
    ).with_id(ROW_COUNT_CHECK)
    inference = BatchInference(
        examples=examples.outputs["examples"],
        model=model.outputs["model"],
        output_path=job.output_path,
        output_format=job.output_format,
        keep=job.keep,
        overwrite=job.overwrite,
    ).with_id(BATCH_INFERENCE)
    inference.add_upstream_node(gate)
    inference.add_upstream_node(row_check)
    return tfx.dsl.Pipeline(
        pipeline_name=batch_pipeline_name(config),
        pipeline_root=pipeline_root,
        components=[examples, statistics, model, validator, gate, row_check, inference],
        enable_cache=False,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_args),
    )


def local_batch_pipeline(config: PipelineConfig, job: BatchJob) -> tfx.dsl.Pipeline:
    """The batch pipeline on this machine: the config's MLMD store and Beam args."""
    return create_batch_pipeline(
        config, job,
        pipeline_root=str(config.pipeline.output_dir / "batch_root"),
        beam_args=config.beam.args,
        metadata_connection_config=local_metadata(config),
    )


def format_of(path: Path, default: str) -> str:
    """The data format a file's suffix names (.csv, .parquet, .tfrecord, .avro), else `default`."""
    suffix = path.suffix.lstrip(".") if path.is_file() else ""
    return suffix if suffix in data_formats.FORMATS else default


def plan_local_job(
    config: PipelineConfig,
    data: Path,
    output: Path,
    *,
    data_format: str | None = None,
    version: int | None = None,
    label: str | None = None,
    output_format: str | None = None,
    keep: tuple[str, ...] = (),
    overwrite: bool = False,
    allow_anomalies: bool = False,
) -> tuple[BatchJob, int]:
    """Checks a local scoring job before anything runs, and returns it with the model version.

    Raises:
        ConfigError: one line naming what is wrong: an unknown label or version, data that
            cannot be read or lacks a feature the model needs, a kept column the data lacks, an
            existing output (without `overwrite`).
    """
    base = str(config.model_push_dir)
    if label is not None:
        labels = config.deployment.version_labels
        if label not in labels:
            known = ", ".join(sorted(labels)) or "none"
            raise ConfigError(f"{config.source}: deployment.version_labels: no label {label!r} "
                              f"(labels: {known})")
        version = labels[label]
    try:
        version, version_dir = resolve_version(base, version)
        model_schema(version_dir)  # a model without its schema cannot be validated against
        needed = raw_feature_names(version_dir)
    except ModelVersionError as error:
        raise ConfigError(str(error)) from None
    if not data.exists():
        raise ConfigError(f"--data: no such file or folder {data}")
    fmt = data_format or format_of(data, config.data.format)
    try:
        columns = data_formats.columns(data, fmt)
    except ValueError as error:
        raise ConfigError(f"--data: {error}") from None
    missing = [name for name in needed if name not in columns]
    if missing:
        raise ConfigError(f"--data: {data} has no column {', '.join(map(repr, missing))}, which "
                          f"model version {version} needs")
    absent = [name for name in keep if name not in columns]
    if absent:
        raise ConfigError(f"--keep: {data} has no column {', '.join(map(repr, absent))}")
    if output.exists() and not overwrite:
        raise ConfigError(f"--output: {output} exists; pass --overwrite to replace it")
    output_format = output_format or ("csv" if output.suffix == ".csv" else "parquet")
    if output_format not in OUTPUT_FORMATS:
        raise ConfigError(f"--output-format: expected one of {OUTPUT_FORMATS}")
    input_base, pattern = data_formats.input_location(data.resolve(), fmt)
    job = BatchJob(
        input_base=input_base, input_pattern=pattern, data_format=fmt,
        model_base_path=base, model_version=str(version),
        output_path=str(output.resolve()), output_format=output_format, keep=keep,
        overwrite=overwrite, allow_anomalies=allow_anomalies,
    )
    return job, version
