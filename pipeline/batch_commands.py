"""CLI verb of batch inference: `skewless predict-batch`."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import click

from skewless.pipeline.commands import (
    CONFIG_OPTION,
    _log_file,
    _progress_printer,
    load_config_or_exit,
)
from skewless.pipeline.config import ConfigError


@click.command("predict-batch")
@CONFIG_OPTION
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="The new data: a file, or a folder of files of one format (no label needed).")
@click.option("--format", "data_format", type=click.Choice(["csv", "parquet", "tfrecord", "avro"]),
              help="The data's format (default: the file's suffix, else the config's data.format).")
@click.option("--model-version", type=int, help="The pushed version to score with "
              "(default: the newest).")
@click.option("--label", help="Score with the version a deployment.version_labels label names.")
@click.option("--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The predictions file.")
@click.option("--output-format", type=click.Choice(["parquet", "csv"]),
              help="Default: csv for a .csv output, else parquet.")
@click.option("--keep", multiple=True, help="An input column to keep beside the predictions "
              "(repeatable; default: every input column).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--allow-anomalies", is_flag=True,
              help="Score even if the data does not match the model's schema.")
def predict_batch(config_path: Path, data: Path, data_format: str | None,
                  model_version: int | None, label: str | None, output: Path,
                  output_format: str | None, keep: tuple[str, ...], overwrite: bool,
                  allow_anomalies: bool) -> None:
    """Score a data file with the pushed (or labelled) model, in Beam, recorded in MLMD."""
    from skewless.pipeline.batch import local_batch_pipeline, plan_local_job

    if model_version is not None and label is not None:
        raise click.ClickException("give --model-version or --label, not both")
    config = load_config_or_exit(config_path, check_data=False)
    try:
        job, version = plan_local_job(
            config, data, output, data_format=data_format, version=model_version, label=label,
            output_format=output_format, keep=keep, overwrite=overwrite,
            allow_anomalies=allow_anomalies)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Scoring {data} with model {config.serving.model_name} version {version}")
    started = time.monotonic()
    _run(config, local_batch_pipeline(config, job), version)
    seconds = time.monotonic() - started
    _print_summary(config, seconds)


def _run(config, pipeline, version: int) -> None:
    from skewless.pipeline.runner import ComponentFailed, ProgressDagRunner, logs_to_file

    log_file = _log_file(config, "predict-batch")
    click.echo(f"Pipeline {pipeline.pipeline_info.pipeline_name!r}: logs in {log_file}")
    tmp = config.pipeline.output_dir / "tmp"  # TFX leaves mkdtemp folders behind
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = None
    if config.metadata.sqlite is not None:
        config.metadata.sqlite.parent.mkdir(parents=True, exist_ok=True)
    failure = None
    with logs_to_file(log_file) as terminal:
        try:
            ProgressDagRunner(_progress_printer(terminal)).run(pipeline)
        except ComponentFailed as error:
            failure = error
    logging.getLogger().setLevel(logging.WARNING)
    if failure is not None:
        _report_failure(config, failure, log_file, version)


def _report_failure(config, failure, log_file: Path, version: int) -> None:
    from skewless.pipeline.build import ANOMALY_GATE

    if failure.node_id == ANOMALY_GATE:
        anomalies = _latest_anomalies(config)
        click.echo(f"Data anomalies found: nothing was scored ({len(anomalies)} anomalies).",
                   err=True)
        for anomaly in anomalies:
            click.echo(f"  feature {anomaly.feature} [{anomaly.split}]: {anomaly.kind}: "
                       f"{anomaly.description}", err=True)
        raise click.ClickException(
            f"data does not match the schema of model version {version} in serving; fix the "
            "data, or pass --allow-anomalies")
    cause = failure.__cause__
    first_line = (str(cause).strip().splitlines() or ["(no message)"])[0][:500]
    raise click.ClickException(
        f"{failure.node_id} failed: {type(cause).__name__}: {first_line} (full log: {log_file})")


def _print_summary(config, seconds: float) -> None:
    from skewless.components.batch_inference.executor import (
        OUTPUT_PATH_KEY,
        PUSHED_VERSION,
        ROWS_IN,
        ROWS_OUT,
    )
    from skewless.pipeline.batch import BATCH_INFERENCE, batch_pipeline_name
    from skewless.pipeline.store import connect, latest_output

    artifact = latest_output(connect(config), batch_pipeline_name(config), BATCH_INFERENCE,
                             "InferenceResult")
    props = artifact.custom_properties
    click.echo(f"Summary ({seconds:.1f} s)")
    click.echo(f"  rows in: {props[ROWS_IN].int_value}, rows out: {props[ROWS_OUT].int_value}")
    click.echo(f"  model: {config.serving.model_name} version "
               f"{props[PUSHED_VERSION].int_value}")
    click.echo(f"  predictions: {props[OUTPUT_PATH_KEY].string_value}")
    anomalies = _latest_anomalies(config)
    if anomalies:
        click.echo(f"  anomalies: {len(anomalies)} allowed (--allow-anomalies): "
                   + ", ".join(sorted({a.feature for a in anomalies})))


def _latest_anomalies(config) -> list:
    from skewless.components.anomaly_gate.executor import read_anomalies_at
    from skewless.pipeline.batch import BATCH_SPLIT, batch_pipeline_name
    from skewless.pipeline.build import EXAMPLE_VALIDATOR
    from skewless.pipeline.store import connect, latest_output

    artifact = latest_output(connect(config), batch_pipeline_name(config), EXAMPLE_VALIDATOR,
                             "ExampleAnomalies")
    return read_anomalies_at(artifact.uri, [BATCH_SPLIT]) if artifact else []


COMMANDS = [predict_batch]
