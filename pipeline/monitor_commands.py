"""`skewless monitor`: skew, drift and prediction drift of the served model from its request logs,
and, with `--retrain`, a pipeline run when a configured trigger fires."""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path

import click
from pydantic import ValidationError

from skewless.pipeline.commands import CONFIG_OPTION, load_config_or_exit, run
from skewless.pipeline.files import write_text_atomically
from skewless.pipeline.run_config import MonitoringSection, PipelineConfig

# Exit statuses: 1 when a distance is over its threshold; 2 when the input cannot be monitored.
THRESHOLD_CROSSED = 1


class MonitorInputError(click.ClickException):
    exit_code = 2


def _window_seconds(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return MonitoringSection(window=value).window_seconds
    except ValidationError:
        raise click.BadParameter(f"expected a duration such as 30m, 6h or 1d, got {value!r}",
                                 param_hint="--window") from None


def new_data_reason(config: PipelineConfig) -> str | None:
    """Why the data under `data.path` is new since the last run (ExampleGen's own input
    fingerprint differs), or None when it is not."""
    from tfx.components.example_gen import utils
    from tfx.proto import example_gen_pb2

    from skewless.components.data_formats import input_location, source_files
    from skewless.pipeline.monitor_store import last_input_fingerprint

    recorded = last_input_fingerprint(config)
    if recorded is None:
        return None
    base, pattern = input_location(config.data.path, config.data.format)
    split = example_gen_pb2.Input.Split(name="single_split", pattern=pattern)
    fingerprint, _, _ = utils.calculate_splits_fingerprint_span_and_version(base, [split])
    if fingerprint == recorded[0]:
        return None
    since = datetime.datetime.fromtimestamp(recorded[1] / 1000, datetime.UTC)
    newer = [p.name for p in source_files(config.data.path, config.data.format)
             if p.stat().st_mtime > since.timestamp()]
    files = f": {', '.join(newer)}" if newer else " (files removed or replaced)"
    return (f"data files under {config.data.path} changed since the last run "
            f"({since:%Y-%m-%d %H:%M:%SZ}){files}")


def fired_triggers(config: PipelineConfig, result) -> list[dict]:
    """The configured triggers that fire, each with why."""
    enabled = config.monitoring.triggers
    fired = [{"trigger": c.check, "feature": c.feature,
              "reason": f"{c.check} of {c.feature}: {c.comparator} {c.distance:.4f} above "
                        f"{c.threshold:.4f}"}
             for c in result.failures if c.check in enabled]
    if "new_data" in enabled:
        reason = new_data_reason(config)
        if reason is not None:
            fired.append({"trigger": "new_data", "feature": "", "reason": reason})
    return fired


@click.command()
@CONFIG_OPTION
@click.option("--logs", "logs_dir", required=True, type=click.Path(path_type=Path),
              help="The request log folder (logging_config's filename_prefix folder).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results as JSON to this file.")
@click.option("--version", "version", type=int,
              help="The served version to compare with (default: the newest pushed).")
@click.option("--window", help="The drift window, e.g. 1h (default: monitoring.window).")
@click.option("--retrain", is_flag=True,
              help="Run the pipeline (as `skewless run`) when a monitoring.triggers fires.")
@click.pass_context
def monitor(ctx: click.Context, config_path: Path, logs_dir: Path, json_path: Path | None,
            version: int | None, window: str | None, retrain: bool) -> None:
    """Skew, drift and prediction drift of the served model's logged requests (TFDV)."""
    from skewless.pipeline import monitor_outputs, monitor_store
    from skewless.pipeline.monitoring import SPLIT, MonitorError, monitor
    from skewless.pipeline.request_logs import RequestLogError, read_logs

    try:
        config = load_config_or_exit(config_path, check_data=False)
    except click.ClickException as error:
        raise MonitorInputError(error.message) from None
    seconds = _window_seconds(window)
    try:
        served = monitor_store.served_model(config, version)
        logs = read_logs(logs_dir, config.serving.model_name, config.task)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        run_dir = config.monitoring_dir / f"monitor-{stamp}"
        logging.getLogger().setLevel(logging.WARNING)
        result = monitor(config, served, logs, run_dir, seconds)
    except (monitor_store.ServedModelNotFound, RequestLogError, MonitorError) as error:
        raise MonitorInputError(str(error)) from None
    triggers = fired_triggers(config, result)
    report = monitor_outputs.write_report(result, triggers, run_dir / "report.html")
    prometheus = config.monitoring.prometheus_file or config.monitoring_dir / "skewless.prom"
    monitor_outputs.write_prometheus(result, prometheus)
    outputs = {"report": str(report), "prometheus": str(prometheus),
               "statistics": str(run_dir / "statistics"), "anomalies": str(run_dir / "anomalies")}
    document = monitor_outputs.as_json(result, outputs, triggers)
    execution_id = monitor_store.record_monitor_run(
        config, served, statistics_uri=outputs["statistics"], anomalies_uri=outputs["anomalies"],
        split=SPLIT, summary={k: document[k] for k in ("rows", "corrupt_records", "failed")},
        triggers=triggers)
    for line in monitor_outputs.summary_lines(result) + monitor_outputs.table_lines(result):
        click.echo(line)
    click.echo(f"report: {report}")
    click.echo(f"prometheus: {prometheus}")
    for trigger in triggers:
        click.echo(f"trigger {trigger['trigger']}: {trigger['reason']}")
    if json_path is not None:
        write_text_atomically(json_path, json.dumps(document, indent=2) + "\n")
    if retrain and triggers:
        click.echo(f"Retraining: {len(triggers)} trigger(s) fired")
        ctx.invoke(run, config_path=config_path)
        run_id = monitor_store.record_retrain_run(config, execution_id)
        document["retrain_run"] = run_id
        if json_path is not None:
            write_text_atomically(json_path, json.dumps(document, indent=2) + "\n")
    if result.failures:
        click.echo(f"FAIL: {len(result.failures)} distance(s) over threshold: " + ", ".join(
            f"{c.check} {c.feature}" for c in result.failures), err=True)
        ctx.exit(THRESHOLD_CROSSED)


COMMANDS = [monitor]
