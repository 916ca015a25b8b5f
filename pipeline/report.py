"""The run report: one self-contained HTML page per `skewless run`, read back from ML Metadata.

It holds the figures (inline PNGs, no script, nothing fetched), the anomalies, the metrics
against their thresholds, the blessing decision and the pushed version: what a team attaches to
a review or keeps as a CI artifact.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import logging
from pathlib import Path

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from skewless.components.anomaly_gate.executor import Anomaly, read_anomalies_at
from skewless.pipeline import build, figures
from skewless.pipeline.files import write_text_atomically
from skewless.pipeline.results import MetricCheck, metric_checks, split_names, task_metrics
from skewless.pipeline.run_config import PipelineConfig
from skewless.pipeline.store import (
    RUN_CONTEXT_TYPE,
    connect,
    is_blessed,
    is_pushed,
    pushed_destination,
    pushed_version,
)

REPORTS_FOLDER = "reports"
Artifact = metadata_store_pb2.Artifact


class RunNotFound(LookupError):
    """No such run of the pipeline in the MLMD store; the message names the known runs."""


@dataclasses.dataclass(frozen=True)
class RunArtifacts:
    """What one run of the pipeline output, by (node id, artifact type); cached outputs too."""

    run_id: str
    started: datetime.datetime
    outputs: dict[tuple[str, str], Artifact]

    def get(self, node_id: str, type_name: str) -> Artifact | None:
        return self.outputs.get((node_id, type_name))


def _run_contexts(
    store: metadata_store.MetadataStore, pipeline_name: str
) -> list[metadata_store_pb2.Context]:
    """The pipeline's `skewless run` runs (contexts named by run id), oldest first."""
    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline is None:
        return []
    ours = {e.id for e in store.get_executions_by_context(pipeline.id)}
    runs = [c for c in store.get_contexts_by_type(RUN_CONTEXT_TYPE)
            if any(e.id in ours for e in store.get_executions_by_context(c.id))]
    return sorted(runs, key=lambda c: c.id)


def run_ids(store: metadata_store.MetadataStore, pipeline_name: str) -> list[str]:
    """The ids of the pipeline's `skewless run` runs, oldest first."""
    return [c.name for c in _run_contexts(store, pipeline_name)]


def run_artifacts(
    store: metadata_store.MetadataStore, pipeline_name: str, run_id: str | None = None
) -> RunArtifacts:
    """The outputs of one run (default: the newest).

    Raises:
        RunNotFound: the pipeline has no such run (or no run at all).
    """
    contexts = {c.name: c for c in _run_contexts(store, pipeline_name)}
    known = list(contexts)
    if not known:
        raise RunNotFound(f"no run of pipeline {pipeline_name!r} is recorded yet; "
                          "run `skewless run --config ...` first")
    run_id = run_id or known[-1]
    if run_id not in contexts:
        raise RunNotFound(f"no run {run_id!r} of pipeline {pipeline_name!r}; known runs: "
                          + ", ".join(known[-5:]) + (" (newest last)" if len(known) > 1 else ""))
    executions = store.get_executions_by_context(contexts[run_id].id)
    node_of = {}
    for execution in executions:
        for node in store.get_contexts_by_execution(execution.id):
            if node.type == "node" and node.name.startswith(f"{pipeline_name}."):
                node_of[execution.id] = node.name[len(pipeline_name) + 1:]
    events = store.get_events_by_execution_ids([e.id for e in executions])
    outputs = [e for e in events if e.type == metadata_store_pb2.Event.OUTPUT]
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in outputs])}
    found = {}
    for event in sorted(outputs, key=lambda e: e.artifact_id):
        artifact = artifacts[event.artifact_id]
        found[(node_of.get(event.execution_id, "?"), artifact.type)] = artifact
    started = min((e.create_time_since_epoch for e in executions), default=0)
    return RunArtifacts(run_id, datetime.datetime.fromtimestamp(started / 1000), found)


def report_path(config: PipelineConfig, run_id: str) -> Path:
    """Where a run's report goes by default: `<output_dir>/reports/<run id>.html`."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in run_id)
    return config.pipeline.output_dir / REPORTS_FOLDER / f"{safe}.html"


def write_report(
    config: PipelineConfig, run_id: str | None = None, output: Path | None = None
) -> Path:
    """Writes the report of a run (default: the newest) and returns its path.

    Raises:
        RunNotFound: the pipeline has no such run.
    """
    if config.metadata.sqlite is not None and not config.metadata.sqlite.exists():
        raise RunNotFound(f"no MLMD store at {config.metadata.sqlite}: "
                          "run `skewless run --config ...` first")
    run = run_artifacts(connect(config), config.pipeline.name, run_id)
    path = output or report_path(config, run.run_id)
    write_text_atomically(path, render(config, run))
    return path


# The page ----------------------------------------------------------------------------------

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1300px; color: #212121; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #cfd8dc; padding: 4px 10px; text-align: left; }
th { background: #eceff1; }
.pass { color: #2e7d32; font-weight: bold; } .fail { color: #c62828; font-weight: bold; }
img { max-width: 100%; } .note { color: #616161; }
"""


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _checks_table(checks: tuple[MetricCheck, ...]) -> str:
    if not checks:
        return '<p class="note">No thresholds are configured.</p>'
    rows = []
    for check in checks:
        bounds = ", ".join(f"{name} {bound:g}" for name, bound in (
            ("lower bound", check.lower_bound), ("upper bound", check.upper_bound),
            ("max decrease", check.max_decrease if check.higher_is_better else None),
            ("max increase", check.max_increase if not check.higher_is_better else None),
        ) if bound is not None)
        verdict = '<span class="pass">PASS</span>' if check.passed else (
            '<span class="fail">FAIL</span>')
        rows.append([verdict, html.escape(check.metric), _number(check.value),
                     _number(check.baseline), html.escape(bounds)])
    return html_table(["", "metric", "value", "baseline", "threshold"], rows)


def _anomalies(anomalies: list[Anomaly]) -> str:
    if not anomalies:
        return "<p>None: the data matches the schema.</p>"
    return html_table(["split", "feature", "kind", "description"], [
        [html.escape(a.split), html.escape(a.feature), html.escape(a.kind),
         html.escape(a.description)] for a in anomalies])


def _figure(title: str, draw) -> str:
    """A figure as an inline image, or a note saying why it is missing (never a failed page)."""
    try:
        picture = draw()
    except Exception as error:  # noqa: BLE001 - a report still shows what it can
        logging.getLogger(__name__).warning("figure %r not drawn: %s", title, error)
        return (f"<h3>{html.escape(title)}</h3>"
                f'<p class="note">Not drawn: {html.escape(str(error))}</p>')
    return f"<h3>{html.escape(title)}</h3>{picture.img_tag()}"


def render(config: PipelineConfig, run: RunArtifacts) -> str:
    """The report page of a run, as one HTML string with every image inline."""
    task = config.task
    statistics = run.get(build.STATISTICS_GEN, "ExampleStatistics")
    anomalies = run.get(build.EXAMPLE_VALIDATOR, "ExampleAnomalies")
    examples = run.get(build.EXAMPLE_GEN, "Examples")
    model = run.get(build.TRAINER, "Model")
    model_run = run.get(build.TRAINER, "ModelRun")
    evaluation = run.get(build.EVALUATOR, "ModelEvaluation")
    blessing = run.get(build.EVALUATOR, "ModelBlessing")
    pushed = run.get(build.PUSHER, "PushedModel")

    parts = [f"<h1>Run {html.escape(run.run_id)} of pipeline "
             f"{html.escape(config.pipeline.name)}</h1>",
             f'<p class="note">Started {run.started:%Y-%m-%d %H:%M:%S}; task {task.kind}; '
             f"label {html.escape(config.label.name)}; data {html.escape(str(config.data.path))}"
             "</p>", "<h2>Decision</h2>"]
    if blessing is None:
        parts.append("<p>No evaluation in this run: it stopped before the Evaluator.</p>")
    elif is_blessed(blessing):
        parts.append('<p><span class="pass">Blessed</span>: the model met its thresholds.</p>')
    else:
        parts.append('<p><span class="fail">Not blessed</span>: the model did not meet its '
                     "thresholds; nothing was pushed.</p>")
    if pushed is not None and is_pushed(pushed):
        version, where = str(pushed_version(pushed)), pushed_destination(pushed)
        parts.append(f"<p>Pushed version <b>{html.escape(version)}</b> to "
                     f"<code>{html.escape(where)}</code>.</p>")
    if evaluation is not None:
        parts.append("<h2>Metrics against thresholds</h2>")
        parts.append(_checks_table(metric_checks(config, evaluation.uri)))
        metrics = task_metrics(config, evaluation.uri)
        parts.append(html_table(["metric (whole eval split)", "value"],
                            [[html.escape(k), _number(v)] for k, v in metrics.items()]))
    parts.append("<h2>Anomalies</h2>")
    parts.append(_anomalies(read_anomalies_at(anomalies.uri, split_names(anomalies)))
                 if anomalies is not None else "<p>Not checked in this run.</p>")
    parts.append("<h2>Figures</h2>")
    if statistics is not None:
        parts.append(_figure("Statistics: train against eval",
                             lambda: figures.statistics_figure(statistics.uri)))
    if model_run is not None:
        parts.append(_figure("Training", lambda: figures.training_figure(model_run.uri, task)))
    if evaluation is not None and examples is not None and model is not None:
        parts.append(_figure(f"Evaluation ({task.kind})", lambda: figures.evaluation_figure(
            config, evaluation.uri, examples.uri, model.uri)))
        parts.append(_figure("Metrics per slice",
                             lambda: figures.slices_figure(config, evaluation.uri)))
    title = f"skewless report: {config.pipeline.name} {run.run_id}"
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}'
            f"</title><style>{STYLE}</style></head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")
