"""`skewless loadtest`: how many rows per second one replica holds, and what to deploy.

The command is thin: flags are checked here (one-line errors), the measuring is
`skewless.serving.loadtest` and `batching_sweep`, the arithmetic `skewless.serving.capacity`,
and `--write-config` goes through `config_writer`, which keeps the YAML's comments.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from skewless.pipeline.commands import load_config_or_exit
from skewless.pipeline.config import ConfigError
from skewless.pipeline.files import write_text_atomically

JSON_FILE = "loadtest.json"
PLOT_FILE = "loadtest.png"
SWEEP_FILE = "batching_sweep.json"
BATCHING_FILE = "batching_parameters.txt"


def _fail(message: str) -> click.ClickException:
    return click.ClickException(message)


def _int_list(text: str, what: str) -> tuple[int, ...]:
    from skewless.serving.loadtest import parse_levels

    try:
        levels = parse_levels(text, what)
    except ValueError as error:
        raise _fail(str(error)) from None
    if any(not v.is_integer() for v in levels):
        raise _fail(f"{what}: expected whole numbers, got {text!r}")
    return tuple(int(v) for v in levels)


def _load_rows(rows_path: Path | None, config) -> list[dict[str, Any]]:
    from skewless.pipeline.eval_rows import eval_rows
    from skewless.serving.demo import load_rows

    if rows_path is not None:
        try:
            return load_rows(str(rows_path))
        except (OSError, ValueError) as error:
            raise _fail(str(error)) from None
    if config is None:
        raise _fail("give --rows FILE, or --config to send the eval split of the last run")
    try:
        return eval_rows(config)
    except ConfigError as error:
        raise _fail(str(error)) from None


def _check_flags(flags: dict[str, Any]) -> None:
    checks = [
        (flags["step_seconds"] <= 0, "--step-seconds must be positive"),
        (flags["timeout"] <= 0, "--timeout must be positive"),
        (flags["slo_p99_ms"] <= 0, "--slo-p99-ms must be positive"),
        (not 0 <= flags["max_error_rate"] < 1, "--max-error-rate must be in [0, 1)"),
        (not 0 <= flags["headroom"] < 1,
         f"--headroom must be in [0, 1) (a fraction of capacity kept free), "
         f"got {flags['headroom']}"),
        (flags["peak_qps"] is not None and flags["peak_qps"] <= 0,
         "--peak-qps must be positive"),
        (flags["rows_per_request"] < 1, "--rows-per-request must be at least 1"),
        (flags["processes"] is not None and flags["processes"] < 1,
         "--processes must be at least 1"),
        (flags["connections"] < 1, "--connections must be at least 1"),
        (flags["port"] is not None and not 0 < flags["port"] < 65536,
         "--port must be between 1 and 65535"),
        (flags["pid"] is not None and flags["prometheus_url"] is not None,
         "give --pid (a local server) or --prometheus-url (a remote one), not both"),
        (flags["write_config"] and flags["config_path"] is None,
         "--write-config needs --config: the file whose deployment section it updates"),
        (flags["write_config"] and not flags["sweep_batching"] and flags["peak_qps"] is None,
         "--write-config needs --peak-qps to size the replicas"),
        (flags["write_config"] and not flags["sweep_batching"] and flags["autoscale_on"] == "cpu"
         and flags["pid"] is None and flags["prometheus_url"] is None,
         "--write-config with --autoscale-on cpu needs the server's CPU: give --pid or "
         "--prometheus-url, or use --autoscale-on requests"),
        (flags["concurrency"] is not None and flags["rate"] is not None,
         "give --concurrency (closed loop) or --rate (open loop), not both"),
        (flags["sweep_batching"] and not flags["model_base_path"],
         "--sweep-batching starts its own servers: give --model_base_path"),
        (not flags["sweep_batching"] and flags["model_base_path"] is not None,
         "--model_base_path is for --sweep-batching; point a load test at a running server "
         "with --host/--port"),
        (flags["sweep_batching"] and flags["sweep_concurrency"] < 1,
         "--sweep-concurrency must be at least 1"),
    ]
    for failed, message in checks:
        if failed:
            raise _fail(message)


def _cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


@click.command("loadtest")
@click.option("--model", default=None,
              help="Model name (default: the config's serving.model_name).")
@click.option("--rest", "transport", flag_value="rest", default=True, help="REST (default).")
@click.option("--grpc", "transport", flag_value="grpc", help="gRPC.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="Default 8501 (REST) or 8500 (gRPC).")
@click.option("--signature_name", default="", help="Signature (default serving_default).")
@click.option("--rows", "rows_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Feature rows: a JSON list of objects or {\"instances\": [...]}.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Pipeline config: rows from its eval split (without --rows), "
                                 "the CPU request of --profile, and the file --write-config edits.")
@click.option("--rows-per-request", type=int, default=1, show_default=True)
@click.option("--concurrency", default=None,
              help="Closed loop: concurrent callers per step [default 1,2,4,8,16,32,64].")
@click.option("--rate", default=None, help="Open loop: requests per second per step, e.g. "
                                           "100,200,400,800.")
@click.option("--step-seconds", type=float, default=10.0, show_default=True)
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds before a request counts as timed out.")
@click.option("--slo-p99-ms", type=float, default=100.0, show_default=True,
              help="The ramp stops after a step whose p99 is above this.")
@click.option("--max-error-rate", type=float, default=0.01, show_default=True,
              help="The ramp stops after a step with more errors and timeouts than this.")
@click.option("--pid", type=int, default=None, help="Local server process: CPU and RSS from /proc.")
@click.option("--prometheus-url", default=None,
              help="Remote server: CPU and RSS from its Prometheus metrics URL.")
@click.option("--processes", type=int, default=None,
              help="Load generator processes [default: 1, one more after each saturated step].")
@click.option("--connections", type=int, default=1, show_default=True,
              help="gRPC connections per load generator process. A server with --workers N "
                   "shares connections, not requests, among its processes: give at least N.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("loadtest"), show_default=True)
@click.option("--peak-qps", type=float, default=None, help="Peak requests per second to plan for.")
@click.option("--headroom", type=float, default=0.3, show_default=True,
              help="Fraction of a replica's capacity kept free.")
@click.option("--profile", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="The deployment overlay the measured hardware stands for.")
@click.option("--autoscale-on", type=click.Choice(["cpu", "requests"]), default="cpu",
              show_default=True, help="cpu: CPU utilisation at the knee; requests: requests per "
                                      "second per pod through the Prometheus adapter.")
@click.option("--write-config", is_flag=True,
              help="Write replicas, autoscaling (and the swept batching) into the config's "
                   "deployment section, keeping its comments.")
@click.option("--sweep-batching", is_flag=True,
              help="Tune batching_parameters.txt on servers started here (--model_base_path).")
@click.option("--model_base_path", default=None, help="With --sweep-batching: versions to serve.")
@click.option("--max-batch-sizes", default="1,4,8,16,32,64,128,256", show_default=True)
@click.option("--batch-timeouts-micros", default="0,500,1000,2000,5000,10000", show_default=True,
              help="0 is allowed here.")
@click.option("--sweep-concurrency", type=int, default=64, show_default=True)
def loadtest(**flags) -> None:
    """Ramp load on a TF-Serving-compatible endpoint; capacity, replicas, autoscaling, batching."""
    _check_flags(flags)
    config = None
    if flags["config_path"] is not None:
        config = load_config_or_exit(flags["config_path"], check_data=False)
    model = flags["model"] or (config.serving.model_name if config is not None else None)
    if not model:
        raise _fail("give --model, or --config to use its serving.model_name")
    rows = _load_rows(flags["rows_path"], config)
    if flags["sweep_batching"]:
        _sweep(flags, config, model, rows)
    else:
        _ramp(flags, config, model, rows)


def _monitors(flags):
    from skewless.serving import resources

    monitors = []
    if flags["pid"] is not None:
        try:
            resources.check_pid(flags["pid"])
        except ValueError as error:
            raise _fail(str(error)) from None
        monitors.append(resources.ProcMonitor(flags["pid"]))
    if flags["prometheus_url"] is not None:
        monitor = resources.PrometheusMonitor(flags["prometheus_url"])
        try:
            monitor.scrape()
        except (OSError, ValueError) as error:
            raise _fail(f"--prometheus-url {flags['prometheus_url']}: no Prometheus metrics "
                        f"there ({error})") from None
        monitors.append(monitor)
    gpu = resources.gpu_monitor()
    if gpu is not None:
        monitors.append(gpu)
    return resources.Monitors(monitors)


def _ramp(flags, config, model: str, rows) -> None:
    from skewless.serving import capacity, loadtest
    from skewless.serving.errors import ServingError

    transport = flags["transport"]
    mode, text = ("rate", flags["rate"]) if flags["rate"] else (
        "concurrency", flags["concurrency"] or "1,2,4,8,16,32,64")
    try:
        levels = loadtest.parse_levels(text, f"--{mode}")
    except ValueError as error:
        raise _fail(str(error)) from None
    if mode == "concurrency" and any(not v.is_integer() for v in levels):
        raise _fail(f"--concurrency: expected whole numbers of callers, got {text!r}")
    monitors = _monitors(flags)
    port = flags["port"] or (8501 if transport == "rest" else 8500)
    try:
        target = loadtest.prepare_target(
            transport, flags["host"], port, model, rows,
            rows_per_request=flags["rows_per_request"], signature_name=flags["signature_name"],
            timeout=flags["timeout"], connections=flags["connections"])
    except ServingError as error:
        raise _fail(f"{transport} {flags['host']}:{port}: {error.code.name}: "
                    f"{error.message}") from None
    except ValueError as error:
        raise _fail(str(error)) from None
    ramp = loadtest.Ramp(mode, levels, flags["step_seconds"], flags["rows_per_request"],
                         flags["processes"])
    slo = loadtest.Slo(flags["slo_p99_ms"], flags["max_error_rate"])
    click.echo(f"Load test of {model!r} over {transport} at {flags['host']}:{port}, "
               f"{len(levels)} steps of {ramp.step_seconds:g} s, SLO p99 <= {slo.p99_ms:g} ms")
    result = loadtest.run_load_test(
        target, ramp, slo, monitors, on_step=lambda s: click.echo(loadtest.format_step(s)),
        describe={"model": model, "signature_name": flags["signature_name"]})
    click.echo(f"Stopped: {result.stopped}")
    cpu_request = None
    if config is not None:
        cpu_request = _cores(getattr(config.deployment, flags["profile"]).requests.cpu)
    recommendation = capacity.recommend(result, headroom=flags["headroom"],
                                        peak_qps=flags["peak_qps"], cpu_request=cpu_request)
    output_dir: Path = flags["output_dir"]
    document = result.to_json() | {
        "recommendation": None if recommendation is None else asdict(recommendation)}
    loadtest.write_json(output_dir / JSON_FILE, document)
    loadtest.write_plot(output_dir / PLOT_FILE, result,
                        f"{model} over {transport}: throughput and p99 against load")
    click.echo(f"Wrote {output_dir / JSON_FILE} and {output_dir / PLOT_FILE}")
    if any(s.generator_saturated for s in result.steps):
        click.echo("Warning: the load generator was saturated in some steps (see "
                   "generator_cpu_cores); give more --processes or a machine of its own.")
    if recommendation is None:
        raise _fail(f"no step met the SLO (p99 <= {slo.p99_ms:g} ms, errors <= "
                    f"{slo.max_error_rate:.1%}): nothing to recommend")
    _echo_recommendation(recommendation)
    if flags["write_config"]:
        _write_config(flags, config, recommendation)


def _echo_recommendation(r) -> None:
    click.echo(f"Capacity per replica under the SLO: {r.capacity_rows_per_second:,.0f} rows/s, "
               f"{r.capacity_requests_per_second:,.1f} requests/s (knee at {r.knee_load:g}, "
               f"p99 {r.knee_p99_ms:.0f} ms; highest under the SLO "
               f"{r.max_rows_per_second_under_slo:,.0f} rows/s)")
    if r.replicas is not None:
        click.echo(f"Replicas for a peak of {r.peak_qps:g} requests/s with {r.headroom:.0%} "
                   f"headroom: {r.replicas}")
    if r.target_cpu_utilization is not None:
        click.echo(f"Autoscale on CPU at {r.target_cpu_utilization}% of the request "
                   f"({r.cpu_at_knee:.2f} cores at the knee)")
    click.echo(f"Autoscale on requests at {r.target_requests_per_second:g} requests/s per pod "
               f"(Prometheus adapter)")


def _write_config(flags, config, recommendation) -> None:
    if recommendation.replicas is None:
        raise _fail("--write-config needs --peak-qps to size the replicas")
    current = config.deployment.replicas
    replicas: dict[str, Any] = {"min": min(current.min, recommendation.replicas),
                                "max": recommendation.replicas}
    if flags["autoscale_on"] == "cpu":
        if recommendation.target_cpu_utilization is None:
            raise _fail("--autoscale-on cpu needs the server's CPU: give --pid or "
                        "--prometheus-url, or use --autoscale-on requests")
        replicas["target_cpu_utilization"] = recommendation.target_cpu_utilization
    else:
        replicas["target_cpu_utilization"] = None
        replicas["target_requests_per_second"] = recommendation.target_requests_per_second
    _update(flags["config_path"], {"deployment": {"replicas": replicas}})


def _update(config_path: Path, changes: dict) -> None:
    from skewless.pipeline.config_writer import update_config

    try:
        update_config(config_path, changes)
    except ConfigError as error:
        raise _fail(f"not written: {error}") from None
    click.echo(f"Updated the deployment section of {config_path}; run `skewless manifests "
               f"--config {config_path}` to emit it")


def _sweep(flags, config, model: str, rows) -> None:
    from google.protobuf import text_format

    from skewless.serving import capacity, loadtest
    from skewless.serving.batching_sweep import enqueued_batches, sweep_batching
    from skewless.serving.errors import ServingError

    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # loader deprecation notes
    sizes = _int_list(flags["max_batch_sizes"], "--max-batch-sizes")
    timeouts = _sweep_timeouts(flags["batch_timeouts_micros"])
    base_path = flags["model_base_path"]
    if not os.path.isdir(base_path):
        raise _fail(f"--model_base_path {base_path}: no such folder")
    slo = loadtest.Slo(flags["slo_p99_ms"], flags["max_error_rate"])
    concurrency = flags["sweep_concurrency"]
    click.echo(f"Batching sweep of {model!r} over {flags['transport']} at concurrency "
               f"{concurrency}, {flags['step_seconds']:g} s per setting, SLO p99 <= "
               f"{slo.p99_ms:g} ms")

    def echo(phase: str, trial) -> None:
        click.echo(f"[tuning {phase}] max_batch_size {trial.max_batch_size}, "
                   f"batch_timeout_micros {trial.batch_timeout_micros}: "
                   f"{loadtest.format_step(trial.step)}")

    try:
        result = sweep_batching(
            base_path, model, rows, transport=flags["transport"], concurrency=concurrency,
            max_batch_sizes=sizes, batch_timeouts_micros=timeouts, slo=slo,
            step_seconds=flags["step_seconds"], processes=flags["processes"],
            rows_per_request=flags["rows_per_request"], timeout=flags["timeout"], on_trial=echo)
    except ServingError as error:
        raise _fail(f"{error.code.name}: {error.message}") from None
    except ConfigError as error:
        raise _fail(str(error)) from None
    output_dir: Path = flags["output_dir"]

    def trials(items):
        return [{"max_batch_size": t.max_batch_size,
                 "batch_timeout_micros": t.batch_timeout_micros, "step": asdict(t.step)}
                for t in items]

    best = result.best
    document = {"num_batch_threads": result.num_batch_threads, "concurrency": concurrency,
                "slo": asdict(slo), "max_batch_size_trials": trials(result.size_trials),
                "batch_timeout_trials": trials(result.timeout_trials),
                "best": None if best is None else trials([best])[0]}
    loadtest.write_json(output_dir / SWEEP_FILE, document)
    if best is None:
        raise _fail(f"no batching setting met the SLO (p99 <= {slo.p99_ms:g} ms); "
                    f"see {output_dir / SWEEP_FILE}")
    threads = result.num_batch_threads
    queue = enqueued_batches(threads, concurrency, best.max_batch_size)
    params = capacity.batching_parameters(threads, best.max_batch_size,
                                          best.batch_timeout_micros, queue)
    write_text_atomically(output_dir / BATCHING_FILE, text_format.MessageToString(params))
    click.echo(f"Recommended for this hardware ({threads} cores) and the SLO: "
               f"{best.step.rows_per_second:,.0f} rows/s, p99 {best.step.p99_ms:.0f} ms\n"
               f"Wrote {output_dir / BATCHING_FILE} and {output_dir / SWEEP_FILE}")
    if flags["write_config"]:
        profile = getattr(config.deployment, flags["profile"])
        limit = max(1, math.floor(_cores(profile.limits.cpu)))
        batching = {"num_batch_threads": min(threads, limit),
                    "max_batch_size": best.max_batch_size,
                    "batch_timeout_micros": best.batch_timeout_micros,
                    "max_enqueued_batches": queue}
        if profile.batching.allowed_batch_sizes:
            batching["allowed_batch_sizes"] = []
        _update(flags["config_path"], {"deployment": {flags["profile"]: {"batching": batching}}})


def _sweep_timeouts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise _fail(f"--batch-timeouts-micros: expected comma-separated whole numbers like "
                    f"0,1000,5000, got {text!r}") from None
    if any(v < 0 for v in values) or any(b <= a for a, b in zip(values, values[1:],
                                                                 strict=False)):
        raise _fail(f"--batch-timeouts-micros: expected increasing numbers from 0 up, "
                    f"got {text!r}")
    return values


COMMANDS = [loadtest]
