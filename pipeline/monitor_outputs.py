"""What a monitor run shows: the table on the terminal, the JSON, the offline HTML report with a
plot per feature (training against serving), and the Prometheus text file for node-exporter's
textfile collector."""

from __future__ import annotations

import dataclasses
import datetime
import html
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from skewless.pipeline import figures, plots
from skewless.pipeline.files import write_text_atomically
from skewless.pipeline.monitoring import Comparison, MonitorResult, feature_names
from skewless.pipeline.report import STYLE, html_table

CHECKS = {"skew": "skew (serving against training)",
          "drift": "drift (last window against the one before)",
          "prediction_drift": "prediction drift (served against eval-split predictions)"}


def _utc(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _distance(comparison: Comparison) -> str:
    return "n/a" if comparison.distance is None else f"{comparison.distance:.4f}"


def summary_lines(result: MonitorResult) -> list[str]:
    """What the logs held and which window was measured, in a few lines."""
    start, end = result.windows.current
    lines = [f"Model {result.model_name!r} version {result.version}: {result.requests} logged "
             f"requests ({result.rows} rows) from {_utc(start)} to {_utc(end)}, "
             f"{result.previous_rows} rows in the window before; {result.files} log file(s)"]
    if result.corrupt:
        lines.append(f"  skipped {result.corrupt} corrupt record(s)")
    if result.unsupported:
        lines.append(f"  skipped {result.unsupported} record(s) of other kinds")
    lines.append(f"  served predictions from the {result.predictions_from}")
    others = {v: n for v, n in result.served_versions.items() if v != result.version}
    if others:
        lines.append("  requests served by other versions (compared with version "
                     f"{result.version} all the same): "
                     + ", ".join(f"{v or 'unknown'}: {n}" for v, n in others.items()))
    return lines


def table_lines(result: MonitorResult) -> list[str]:
    """One line per check, feature and comparator: distance, threshold, status."""
    lines = [f"{'check':<17}{'feature':<24}{'comparator':<16}{'distance':>9}{'threshold':>11}"
             "  status"]
    for c in result.comparisons:
        if c.check == "drift" and result.previous_rows == 0:
            continue
        lines.append(f"{c.check:<17}{c.feature:<24}{c.comparator:<16}{_distance(c):>9}"
                     f"{c.threshold:>11.4f}  {c.status}")
    if result.previous_rows == 0:
        lines.append("drift: n/a, no logged request in the window before")
    for anomaly in result.anomalies:
        lines.append(f"schema anomaly   {anomaly.feature}: {anomaly.kind}: {anomaly.description}")
    return lines


def as_json(result: MonitorResult, outputs: dict[str, str], triggers: list[dict]) -> dict:
    """The run as JSON: the counts, every comparison, the schema anomalies and the triggers."""
    return {
        "model_name": result.model_name, "version": result.version,
        "window": {"current": list(result.windows.current),
                   "previous": list(result.windows.previous)},
        "requests": result.requests, "rows": result.rows, "previous_rows": result.previous_rows,
        "files": result.files, "corrupt_records": result.corrupt,
        "unsupported_records": result.unsupported, "predictions_from": result.predictions_from,
        "served_versions": {str(v): n for v, n in result.served_versions.items()},
        "comparisons": [{**dataclasses.asdict(c), "status": c.status}
                        for c in result.comparisons],
        "failed": [f"{c.check}:{c.feature}" for c in result.failures],
        "anomalies": [dataclasses.asdict(a) for a in result.anomalies],
        "triggers": triggers, "outputs": outputs,
    }


def write_prometheus(result: MonitorResult, path: Path) -> None:
    """One gauge per check, feature and comparator (and its threshold), atomically replaced."""
    registry = CollectorRegistry()
    labels = ["model", "version", "check", "feature", "comparator"]
    distance = Gauge("skewless_monitor_distance", "TFDV distance of serving data", labels,
                     registry=registry)
    threshold = Gauge("skewless_monitor_threshold", "threshold of the distance", labels,
                      registry=registry)
    failed = Gauge("skewless_monitor_failed", "1 when the distance is above its threshold",
                   labels, registry=registry)
    for c in result.comparisons:
        if c.distance is None:
            continue
        values = (result.model_name, str(result.version), c.check, c.feature, c.comparator)
        distance.labels(*values).set(c.distance)
        threshold.labels(*values).set(c.threshold)
        failed.labels(*values).set(int(c.failed))
    counts = Gauge("skewless_monitor_records", "logged records read in the last monitor run",
                   ["model", "kind"], registry=registry)
    counts.labels(result.model_name, "rows").set(result.rows)
    counts.labels(result.model_name, "corrupt").set(result.corrupt)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)


def _status(comparison: Comparison) -> str:
    css = {"FAIL": "fail", "ok": "pass"}.get(comparison.status, "note")
    return f'<span class="{css}">{comparison.status}</span>'


def render_report(result: MonitorResult, triggers: list[dict]) -> str:
    """The report page: the comparisons, anomalies, triggers and a plot per feature."""
    start, end = result.windows.current
    parts = [f"<h1>Monitor: model {html.escape(result.model_name)} version {result.version}</h1>",
             f'<p class="note">{result.requests} requests ({result.rows} rows) from {_utc(start)} '
             f"to {_utc(end)}; {result.previous_rows} rows in the window before; "
             f"{result.corrupt} corrupt records skipped.</p>"]
    failures = result.failures
    parts.append(f'<p><span class="fail">{len(failures)} over threshold</span>: ' + ", ".join(
        html.escape(f"{c.check} {c.feature}") for c in failures) + "</p>" if failures else
        '<p><span class="pass">Every distance is within its threshold.</span></p>')
    for check, title in CHECKS.items():
        rows = [[html.escape(c.feature), html.escape(c.comparator), _distance(c),
                 f"{c.threshold:.4f}", _status(c)] for c in result.comparisons if c.check == check]
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(html_table(["feature", "comparator", "distance", "threshold", "status"], rows))
    parts.append("<h2>Schema anomalies (SERVING environment)</h2>")
    parts.append(html_table(["feature", "kind", "description"], [
        [html.escape(a.feature), html.escape(a.kind), html.escape(a.description)]
        for a in result.anomalies]) if result.anomalies else "<p>None.</p>")
    if triggers:
        parts.append("<h2>Retraining triggers</h2>")
        parts.append(html_table(["trigger", "why"], [[html.escape(t["trigger"]),
                                                  html.escape(t["reason"])] for t in triggers]))
    parts.append("<h2>Training against serving, per feature</h2>")
    served = set(feature_names(result.serving))  # the model's features, not every column
    for feature in figures.distributions({"training": result.training,
                                          "serving": result.serving}):
        if feature.name not in served:
            continue
        picture = plots.feature_distributions([feature], others=3)
        picture.set_label(feature.name)
        parts.append(f"<h3>{html.escape(feature.name)}</h3>{picture.img_tag()}")
    title = f"skewless monitor: {result.model_name} {result.version}"
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}'
            f"</title><style>{STYLE}</style></head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")


def write_report(result: MonitorResult, triggers: list[dict], path: Path) -> Path:
    write_text_atomically(path, render_report(result, triggers))
    return path
