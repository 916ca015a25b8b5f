"""CLI verbs of the pipeline side: `skewless run` and `skewless schema freeze`."""

from __future__ import annotations

import datetime
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TextIO

import click

from skewless.pipeline.config import ConfigError, check_references, load_config
from skewless.pipeline.files import write_text_atomically
from skewless.pipeline.run_config import PipelineConfig

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The pipeline config YAML, e.g. configs/taxi.yaml.",
)


def load_config_or_exit(config_path: Path, check_data: bool = True) -> PipelineConfig:
    """The config, or the CLI's one-line error."""
    try:
        return load_config(config_path, check_data=check_data)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


def _progress_printer(out: TextIO):
    def on_event(event) -> None:
        prefix = f"[{event.index:>2}/{event.total}] {event.node_id:<30}"
        if event.state is None:
            print(f"{prefix} started", file=out, flush=True)
        else:
            print(f"{prefix} {event.state:<9} {event.seconds:7.1f} s", file=out, flush=True)

    return on_event


def _log_file(config: PipelineConfig, verb: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return config.log_dir / f"{verb}-{stamp}.log"


def _run_with_progress(config: PipelineConfig, verb: str, **pipeline_kwargs) -> float:
    """Runs the pipeline with progress on the terminal and logs in a file; returns seconds."""
    from skewless.pipeline.runner import ComponentFailed, logs_to_file, run_pipeline

    log_file = _log_file(config, verb)
    click.echo(f"Pipeline {config.pipeline.name!r}: logs in {log_file}")
    started = time.monotonic()
    # TFX leaves mkdtemp folders behind; keep them under the output folder.
    tmp = config.pipeline.output_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = None
    failure = None
    with logs_to_file(log_file) as terminal:
        try:
            run_pipeline(config, _progress_printer(terminal), **pipeline_kwargs)
        except ComponentFailed as error:
            failure = error
    logging.getLogger().setLevel(logging.WARNING)
    if failure is not None:
        _report_failure(config, failure, log_file)
    return time.monotonic() - started


def _report_failure(config: PipelineConfig, failure, log_file: Path) -> None:
    from skewless.pipeline.build import ANOMALY_GATE
    from skewless.pipeline.results import latest_anomalies

    if failure.node_id == ANOMALY_GATE:
        anomalies = latest_anomalies(config)
        click.echo(f"Data anomalies found: the run stopped before Transform and Trainer "
                   f"({len(anomalies)} anomalies).", err=True)
        for anomaly in anomalies:
            click.echo(f"  feature {anomaly.feature} [{anomaly.split}]: {anomaly.kind}: "
                       f"{anomaly.description}", err=True)
        click.echo(f"  report: {_write_report(config)}", err=True)
        raise click.ClickException(
            "data does not match the schema; fix the data, or update the curated schema "
            "(schema.curated), or set schema.stop_on_anomalies: false"
        )
    cause = failure.__cause__
    first_line = (str(cause).strip().splitlines() or ["(no message)"])[0][:500]
    raise click.ClickException(
        f"{failure.node_id} failed: {type(cause).__name__}: {first_line} (full log: {log_file})"
    )


def _format_check(check) -> str:
    value = "n/a" if check.value is None else f"{check.value:.4f}"
    parts = [f"{check.metric} {value}"]
    for name, bound in (("lower bound", check.lower_bound), ("upper bound", check.upper_bound)):
        if bound is not None:
            parts.append(f"{name} {bound:.4f}")
    if check.change_limit is not None:
        direction = "decrease" if check.higher_is_better else "increase"
        limit = f"max {direction} {check.change_limit:.4f}"
        if check.baseline is None:
            parts.append(f"no blessed baseline yet ({limit})")
        else:
            parts.append(f"baseline {check.baseline:.4f}, {limit}")
    return ("PASS  " if check.passed else "FAIL  ") + "; ".join(parts)


def _format_tuning(tuning) -> str:
    values = ", ".join(f"{k}={v}" for k, v in sorted(tuning.values.items()))
    if tuning.reused:
        return f"hyperparameters: {values} (reused from an earlier search of the same space)"
    score = "n/a" if tuning.score is None else f"{tuning.score:.4f}"
    failed = f", {tuning.failed} failed" if tuning.failed else ""
    return (f"hyperparameters: {values} (best of {tuning.trials} trials{failed}; "
            f"{tuning.objective} {score})")


def _checked_config(config_path: Path):
    """The config with its data checked, and the label column's profile; or the CLI's error."""
    from skewless.pipeline.store import connect, connection_config

    config = load_config_or_exit(config_path, check_data=False)
    try:
        connection_config(config)  # a MySQL password's variable must be set before the run
        if config.metadata.mysql is not None:
            connect(config, readonly=False)  # and its server must take the connection
        return check_references(config)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


@click.command()
@CONFIG_OPTION
def run(config_path: Path) -> None:
    """Run the whole pipeline locally (MLMD on SQLite), reusing cached executions."""
    from skewless.pipeline.results import summarize

    config, label = _checked_config(config_path)
    note = label.missing_note() if label is not None else None
    if note:
        click.echo(f"Label: {note}.")
    seconds = _run_with_progress(config, "run")
    summary = summarize(config)
    click.echo(f"Summary ({seconds:.1f} s)")
    if summary.examples is not None:
        unlabelled = f"; {label.missing} without a label, not trained or evaluated on" if (
            label is not None and label.missing) else ""
        click.echo(f"  rows: {summary.examples} (source, ExampleGen and statistics agree)"
                   f"{unlabelled}")
    if summary.metrics:
        click.echo(f"  {config.label.task} metrics: " + ", ".join(
            f"{name} {value:.4f}" for name, value in summary.metrics.items()))
    if summary.tuning is not None:
        click.echo(f"  {_format_tuning(summary.tuning)}")
    for check in summary.checks:
        click.echo(f"  {_format_check(check)}")
    check = summary.serving_check
    if check is not None and not check.problem:
        click.echo(f"  served: loaded in {check.load_seconds:.1f} s, {check.requests} requests "
                   f"over REST and gRPC answered as in-process, slowest "
                   f"{check.latency_ms_max:.1f} ms")
    if summary.blessed and check is not None and check.problem:
        click.echo("  blessed: yes")
        click.echo(f"  pushed: NO - the model failed on the server: {check.problem}")
    elif summary.blessed:
        click.echo("  blessed: yes")
        click.echo(f"  pushed: version {summary.pushed_version} at {summary.pushed_path}")
    else:
        click.echo("  blessed: NO - the model did not meet its thresholds; nothing was pushed")
    click.echo(f"  report: {_write_report(config)}")


def _write_report(config: PipelineConfig, run_id: str | None = None,
                  output: Path | None = None) -> Path:
    from skewless.pipeline.report import RunNotFound, write_report

    try:
        return write_report(config, run_id, output)
    except RunNotFound as error:
        raise click.ClickException(str(error)) from None


@click.command()
@CONFIG_OPTION
@click.option("--run", "run_id", help="The run's id (default: the newest run).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the HTML (default: <output_dir>/reports/<run id>.html).")
def report(config_path: Path, run_id: str | None, output: Path | None) -> None:
    """Write a past run's self-contained HTML report (figures, anomalies, metrics, push)."""
    config = load_config_or_exit(config_path, check_data=False)
    click.echo(f"report: {_write_report(config, run_id, output)}")


@click.group()
def schema() -> None:
    """Inspect or freeze the data schema."""


@schema.command()
@CONFIG_OPTION
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write schema.pbtxt (default: the config's schema.curated).")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def freeze(config_path: Path, output: Path | None, force: bool) -> None:
    """Infer the schema from the data and write it as a curated schema.pbtxt."""
    from skewless.pipeline.results import latest_schema_uri
    from skewless.pipeline.run_config import SchemaSection

    config = load_config_or_exit(config_path, check_data=False)
    destination = output or config.schema_.curated
    if destination is None:
        raise click.ClickException("give --output, or set schema.curated in the config")
    if destination.exists() and not force:
        raise click.ClickException(f"{destination} exists; pass --force to overwrite it")
    inferring = config.model_copy(
        update={"schema_": SchemaSection(stop_on_anomalies=config.schema_.stop_on_anomalies)}
    )
    try:
        inferring, _ = check_references(inferring)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    _run_with_progress(inferring, "schema-freeze", stop_after_schema=True)
    source = Path(latest_schema_uri(inferring)) / "schema.pbtxt"
    write_text_atomically(destination, source.read_text())
    click.echo(f"Schema written to {destination}")
    if destination != config.schema_.curated:
        click.echo(f"Point schema.curated at it in {config_path} to validate against it.")


COMMANDS = [run, schema, report]
