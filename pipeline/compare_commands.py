"""`skewless models compare`: a candidate label against a baseline label on the same rows.

Thin: flags and rows are checked here (one line each), replaying and comparing is
`skewless.serving.canary`. The exit status gates a canary: 0 within the limits, 1 past them.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from skewless.pipeline.commands import CONFIG_OPTION, load_config_or_exit
from skewless.pipeline.config import ConfigError

TOP_ROWS = 5


def _fail(message: str) -> click.ClickException:
    return click.ClickException(message)


def parse_server(text: str) -> tuple[str, int]:
    """HOST:PORT as a host and a port.

    Raises:
        ValueError: Not HOST:PORT with a port in 1-65535.
    """
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--server: expected HOST:PORT with a port from 1 to 65535, got {text!r}")
    return host, int(port)


def _check_label(flag: str, label: str) -> None:
    from skewless.pipeline.promotion import PromotionError, check_label

    try:
        check_label(label)
    except PromotionError as error:
        raise _fail(f"{flag}: {error}") from None


def _rows(config, rows_path: Path | None, count: int) -> list[dict[str, Any]]:
    from skewless.pipeline.eval_rows import eval_rows
    from skewless.serving.demo import load_rows

    if rows_path is not None:
        try:
            return load_rows(str(rows_path))[:count]
        except (OSError, ValueError) as error:
            raise _fail(str(error)) from None
    try:
        return eval_rows(config, limit=count)
    except ConfigError as error:
        raise _fail(str(error)) from None


def _client(transport: str, host: str, port: int, timeout: float):
    from skewless.serving.client import GrpcClient, RestClient

    client = GrpcClient if transport == "grpc" else RestClient
    return client(host, port, timeout=timeout, retries=1)


def _replay(client, model: str, label: str, rows, where: str):
    import grpc

    from skewless.serving.canary import replay
    from skewless.serving.errors import ServingError

    try:
        return replay(client, model, label, rows)
    except ServingError as error:
        if error.code == grpc.StatusCode.UNAVAILABLE:
            raise _fail(f"cannot reach {where}: {error.message}") from None
        raise _fail(f"label {label} of model {model} at {where}: {error.code.name}: "
                    f"{error.message}") from None


def _print(comparison, baseline: str, candidate: str) -> None:
    click.echo(f"Rows: {comparison.rows}, one Predict request per row and label")
    if comparison.agreement is not None:
        same = round(comparison.agreement * comparison.rows)
        click.echo(f"Agreement: {comparison.agreement:.4f} ({same} of {comparison.rows} rows "
                   f"given the same class)")
    click.echo(f"{comparison.score_output}: mean absolute difference "
               f"{comparison.mean_abs_difference:.6g}, max {comparison.max_abs_difference:.6g}")
    for label in (baseline, candidate):
        latency = comparison.latency_ms[label]
        click.echo(f"Latency {label}: p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms")
    click.echo("Rows that disagree most:")
    for row in comparison.most_different:
        mark = "same" if row.agrees else "DIFFERENT"
        click.echo(f"  row {row.index}: {baseline} {row.baseline}, {candidate} {row.candidate} "
                   f"({mark}; difference {row.difference:.6g})")


@click.command("compare")
@CONFIG_OPTION
@click.option("--baseline", default="stable", show_default=True, help="The baseline label.")
@click.option("--candidate", default="canary", show_default=True, help="The candidate label.")
@click.option("--server", required=True, help="HOST:PORT of a running skewless or TF Serving "
                                              "(gRPC, or REST with --rest).")
@click.option("--rest", "transport", flag_value="rest", help="Talk REST (/v1/models/M/labels/L).")
@click.option("--grpc", "transport", flag_value="grpc", default=True,
              help="Talk gRPC (ModelSpec.version_label; default).")
@click.option("--model", default=None, help="Model name (default: serving.model_name).")
@click.option("--rows", "rows_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Feature rows: a JSON list of objects or {\"instances\": [...]} "
                                 "(default: the eval split of the last run).")
@click.option("--num-rows", type=int, default=None, help="Rows to replay (default canary.rows).")
@click.option("--min-agreement", type=float, default=None,
              help="Classifiers: the least share of rows given the same class "
                   "(default canary.min_agreement).")
@click.option("--max-mean-abs-difference", type=float, default=None,
              help="Regressors (default canary.max_mean_abs_difference).")
@click.option("--max-abs-difference", type=float, default=None,
              help="Regressors, any one row (default canary.max_abs_difference).")
@click.option("--max-p99-latency-ms", type=float, default=None,
              help="Either label's p99 (default canary.max_p99_latency_ms).")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds per request.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the comparison as JSON.")
def compare(config_path: Path, baseline: str, candidate: str, server: str, transport: str,
            model: str | None, rows_path: Path | None, num_rows: int | None, timeout: float,
            json_path: Path | None, **limit_flags: float | None) -> None:
    """Replay rows against two version labels of a served model and compare the answers.

    Exits 1 when the candidate is past a limit (agreement, differences, latency).
    """
    from skewless.serving.canary import CanaryLimits, limit_failures
    from skewless.serving.canary import compare as compare_labels
    from skewless.serving.loadtest import write_json

    config = load_config_or_exit(config_path, check_data=False)
    try:
        host, port = parse_server(server)
    except ValueError as error:
        raise _fail(str(error)) from None
    _check_label("--baseline", baseline)
    _check_label("--candidate", candidate)
    if baseline == candidate:
        raise _fail(f"--baseline and --candidate are both {baseline!r}; compare two labels")
    count = config.canary.rows if num_rows is None else num_rows
    if count < 1:
        raise _fail(f"--num-rows must be at least 1, got {count}")
    if timeout <= 0:
        raise _fail("--timeout must be positive")
    defaults = config.canary
    limits = CanaryLimits(**{name: getattr(defaults, name) if value is None else value
                             for name, value in limit_flags.items()})
    if not 0 <= (limits.min_agreement or 0) <= 1:
        raise _fail(f"--min-agreement must be in [0, 1], got {limits.min_agreement}")
    if any(v is not None and v < 0 for v in asdict(limits).values()):
        raise _fail("limits must not be negative")
    rows = _rows(config, rows_path, count)
    model = model or config.serving.model_name
    task = config.task
    class_output = None if task.kind == "regression" else "classes"
    where = f"{host}:{port} ({'gRPC' if transport == 'grpc' else 'REST'})"
    with _client(transport, host, port, timeout) as client:
        answers = [_replay(client, model, label, rows, where) for label in (baseline, candidate)]
    try:
        comparison = compare_labels(*answers, task.prediction_key, class_output, TOP_ROWS)
    except KeyError as error:
        raise _fail(f"the answers have no output {error}; is {model} a "
                    f"{task.kind} model of this config?") from None
    _print(comparison, baseline, candidate)
    failures = limit_failures(comparison, limits)
    if json_path is not None:
        document = asdict(comparison)
        document.update(baseline=baseline, candidate=candidate, model=model, server=server,
                        limits=asdict(limits), failures=failures)
        for row in document["most_different"]:
            row["features"] = rows[row["index"]]
        write_json(json_path, document)
    for failure in failures:
        click.echo(f"FAIL: {failure}")
    if failures:
        raise SystemExit(1)
    click.echo(f"PASS: {candidate} is within the limits against {baseline}")
