"""Load tests of a TF-Serving-compatible endpoint: ramps, per-step measurements, knee, plot.

A ramp is a list of load levels (concurrent callers, or requests per second). Each step runs for
a fixed time and records throughput, latency percentiles, errors and timeouts, what the server
used (see :mod:`skewless.serving.resources`) and what the load generator itself used. The ramp
stops after the first step that breaks the SLO (p99 above the limit, or too many errors).

The knee is the first step, in load order, that meets the SLO and reaches 95% of the highest
throughput any SLO-meeting step reached: past it, more load mostly buys latency.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skewless.serving.load_generator import Mode, Target, WorkerPool, WorkerResult
from skewless.serving.resources import Monitors, Usage

KNEE_FRACTION = 0.95
# A worker process above this share of one core is likely the bottleneck itself.
GENERATOR_SATURATION = 0.85
GRPC_PREDICT = "/tensorflow.serving.PredictionService/Predict"


@dataclass(frozen=True)
class Slo:
    """The service level a replica must hold."""

    p99_ms: float = 100.0
    max_error_rate: float = 0.01


@dataclass(frozen=True)
class Ramp:
    """The steps of a load test.

    Attributes:
        mode: ``concurrency`` (closed loop) or ``rate`` (open loop, requests per second).
        levels: Increasing load levels.
        step_seconds: Duration of each step.
        rows_per_request: Rows in each Predict request.
        processes: Load generator processes; None starts with one and adds one (up to the
            number of cores) after a step where they were saturated.
    """

    mode: Mode
    levels: tuple[float, ...]
    step_seconds: float = 10.0
    rows_per_request: int = 1
    processes: int | None = None


@dataclass(frozen=True)
class Step:
    """What one step measured."""

    load: float
    mode: str
    seconds: float
    requests: int
    rows_per_second: float
    requests_per_second: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    errors: int
    timeouts: int
    error_rate: float
    server_cpu_cores: float | None
    server_rss_mb: float | None
    gpu_utilization: float | None
    gpu_memory_mb: float | None
    generator_processes: int
    generator_cpu_cores: float
    generator_saturated: bool
    meets_slo: bool
    error_messages: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadTestResult:
    """A whole ramp: its steps, why it stopped, and the knee."""

    target: dict[str, Any]
    ramp: dict[str, Any]
    slo: dict[str, float]
    steps: tuple[Step, ...]
    stopped: str
    knee: int | None  # index into steps

    @property
    def knee_step(self) -> Step | None:
        return None if self.knee is None else self.steps[self.knee]

    @property
    def max_rows_per_second_under_slo(self) -> float | None:
        passing = [s.rows_per_second for s in self.steps if s.meets_slo]
        return max(passing) if passing else None

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ramp": self.ramp,
            "slo": self.slo,
            "steps": [asdict(s) for s in self.steps],
            "stopped": self.stopped,
            "knee": self.knee,
            "max_rows_per_second_under_slo": self.max_rows_per_second_under_slo,
        }


def parse_levels(text: str, what: str) -> tuple[float, ...]:
    """``"1,2,4"`` as increasing positive levels.

    Raises:
        ValueError: Not a comma-separated list of increasing positive numbers; names ``what``.
    """
    try:
        levels = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{what}: expected comma-separated numbers like 1,4,16, "
                         f"got {text!r}") from None
    if not levels or any(not math.isfinite(v) or v <= 0 for v in levels):
        raise ValueError(f"{what}: every level must be a positive number, got {text!r}")
    if any(b <= a for a, b in zip(levels, levels[1:], strict=False)):
        raise ValueError(f"{what}: levels must increase, got {text!r}")
    return levels


def percentile_ms(latencies: Sequence[float], q: float) -> float | None:
    """The q-th percentile in milliseconds, or None without answers."""
    if not len(latencies):
        return None
    return float(np.percentile(np.asarray(latencies), q) * 1000)


def summarize_step(load: float, ramp: Ramp, results: Sequence[WorkerResult], usage: Usage,
                   slo: Slo) -> Step:
    """Merges the workers' results of one step into a :class:`Step`."""
    latencies = [x for r in results for x in r.latencies]
    seconds = max(r.wall_seconds for r in results)
    answered = len(latencies)
    errors = sum(r.errors for r in results)
    timeouts = sum(r.timeouts for r in results)
    total = answered + errors + timeouts
    error_rate = (errors + timeouts) / total if total else 1.0
    messages: dict[str, int] = {}
    for r in results:
        for message, count in r.error_messages.items():
            messages[message] = messages.get(message, 0) + count
    per_process = [r.cpu_seconds / r.wall_seconds for r in results if r.wall_seconds]
    p99 = percentile_ms(latencies, 99)
    return Step(
        load=load,
        mode=ramp.mode,
        seconds=seconds,
        requests=total,
        rows_per_second=answered * ramp.rows_per_request / seconds,
        requests_per_second=answered / seconds,
        p50_ms=percentile_ms(latencies, 50),
        p90_ms=percentile_ms(latencies, 90),
        p99_ms=p99,
        errors=errors,
        timeouts=timeouts,
        error_rate=error_rate,
        server_cpu_cores=usage.cpu_cores,
        server_rss_mb=usage.rss_mb,
        gpu_utilization=usage.gpu_utilization,
        gpu_memory_mb=usage.gpu_memory_mb,
        generator_processes=len(results),
        generator_cpu_cores=sum(per_process),
        generator_saturated=any(c > GENERATOR_SATURATION for c in per_process),
        meets_slo=p99 is not None and p99 <= slo.p99_ms and error_rate <= slo.max_error_rate,
        error_messages=messages,
    )


def find_knee(steps: Sequence[Step]) -> int | None:
    """Index of the knee (see the module docstring), or None when no step meets the SLO."""
    passing = [s.rows_per_second for s in steps if s.meets_slo]
    if not passing:
        return None
    best = max(passing)
    return next(i for i, s in enumerate(steps)
                if s.meets_slo and s.rows_per_second >= KNEE_FRACTION * best)


def format_step(step: Step) -> str:
    """The live progress line of one step."""
    def ms(value: float | None) -> str:
        return "    -" if value is None else f"{value:5.0f}"

    unit = "conc" if step.mode == "concurrency" else "req/s"
    cpu = "-" if step.server_cpu_cores is None else f"{step.server_cpu_cores:.2f}"
    rss = "-" if step.server_rss_mb is None else f"{step.server_rss_mb:.0f} MB"
    gpu = "" if step.gpu_utilization is None else (
        f"  gpu {step.gpu_utilization:.0f}% {step.gpu_memory_mb:.0f} MB")
    flag = "ok " if step.meets_slo else "SLO"
    saturated = "  (load generator saturated)" if step.generator_saturated else ""
    return (f"{flag} {unit} {step.load:>7g}: {step.rows_per_second:9.1f} rows/s  "
            f"p50/p90/p99 {ms(step.p50_ms)}/{ms(step.p90_ms)}/{ms(step.p99_ms)} ms  "
            f"errors {step.errors} timeouts {step.timeouts}  server cpu {cpu} rss {rss}{gpu}  "
            f"generator cpu {step.generator_cpu_cores:.2f} in {step.generator_processes} "
            f"proc{saturated}")


def run_load_test(
    target: Target,
    ramp: Ramp,
    slo: Slo,
    monitors: Monitors,
    on_step: Callable[[Step], None] = lambda step: None,
    describe: Mapping[str, Any] | None = None,
) -> LoadTestResult:
    """Runs a ramp until its last level or the first step that breaks the SLO.

    Args:
        target: What to send where.
        ramp: The steps.
        slo: When to stop.
        monitors: What the server uses, measured during each step.
        on_step: Called with each step as it ends (live progress).
        describe: What to record about the target in the result (model, transport...).

    Returns:
        The steps, why the ramp stopped and the knee.
    """
    processes = ramp.processes or 1
    most = ramp.processes or max(1, os.cpu_count() or 1)
    steps: list[Step] = []
    stopped = "ramp complete"
    pool = WorkerPool(target, processes)
    try:
        for level in ramp.levels:
            monitors.start()
            results = pool.run(ramp.mode, level, ramp.step_seconds)
            usage = monitors.stop()
            step = summarize_step(level, ramp, results, usage, slo)
            steps.append(step)
            on_step(step)
            if not step.meets_slo:
                stopped = (f"SLO broken at {level:g}: p99 "
                           f"{'n/a' if step.p99_ms is None else f'{step.p99_ms:.0f} ms'} "
                           f"(limit {slo.p99_ms:g} ms), error rate {step.error_rate:.1%} "
                           f"(limit {slo.max_error_rate:.1%})")
                break
            if step.generator_saturated and pool.processes < most:
                pool.close()
                pool = WorkerPool(target, pool.processes + 1)
    finally:
        pool.close()
    return LoadTestResult(
        target=dict(describe or {}) | {"transport": target.transport, "host": target.host,
                                        "port": target.port},
        ramp={"mode": ramp.mode, "levels": list(ramp.levels), "step_seconds": ramp.step_seconds,
              "rows_per_request": ramp.rows_per_request},
        slo=asdict(slo),
        steps=tuple(steps),
        stopped=stopped,
        knee=find_knee(steps),
    )


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    """Writes JSON through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    staging.replace(path)


def write_plot(path: Path, result: LoadTestResult, title: str) -> None:
    """Throughput and p99 against load, with the SLO and the knee marked, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = result.steps
    loads = [s.load for s in steps]
    figure, throughput_axis = plt.subplots(figsize=(8, 4.5), dpi=100)
    throughput_axis.plot(loads, [s.rows_per_second for s in steps], "o-", color="tab:blue",
                         label="throughput")
    throughput_axis.set_xlabel("concurrent callers" if result.ramp["mode"] == "concurrency"
                               else "offered requests per second")
    throughput_axis.set_ylabel("rows per second", color="tab:blue")
    throughput_axis.set_ylim(bottom=0)
    if len(set(loads)) > 1 and min(loads) > 0 and max(loads) / min(loads) >= 8:
        throughput_axis.set_xscale("log", base=2)
    throughput_axis.set_xticks(loads, [f"{x:g}" for x in loads])
    throughput_axis.minorticks_off()
    latency_axis = throughput_axis.twinx()
    latency_axis.plot(loads, [math.nan if s.p99_ms is None else s.p99_ms for s in steps],
                      "s--", color="tab:red", label="p99")
    latency_axis.axhline(result.slo["p99_ms"], color="tab:red", linestyle=":", linewidth=1,
                         label=f"SLO p99 {result.slo['p99_ms']:g} ms")
    latency_axis.set_ylabel("p99 latency (ms)", color="tab:red")
    latency_axis.set_ylim(bottom=0)
    knee = result.knee_step
    if knee is not None:
        throughput_axis.axvline(knee.load, color="black", linestyle="-.", linewidth=1)
        throughput_axis.annotate(
            f"knee: {knee.rows_per_second:,.0f} rows/s\np99 {knee.p99_ms:.0f} ms",
            xy=(knee.load, knee.rows_per_second), xytext=(8, -30),
            textcoords="offset points", fontsize=8)
    handles = throughput_axis.get_legend_handles_labels()
    more = latency_axis.get_legend_handles_labels()
    throughput_axis.legend(handles[0] + more[0], handles[1] + more[1], loc="best",
                           fontsize=8)
    throughput_axis.set_title(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(staging, format="png")
    plt.close(figure)
    staging.replace(path)


def rest_body(rows: Sequence[Mapping[str, Any]], signature_name: str = "") -> bytes:
    """A REST Predict body in TF Serving's row format; bytes values as base64."""
    instances = [{k: {"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v
                  for k, v in row.items()} for row in rows]
    body: dict[str, Any] = {"instances": instances}
    if signature_name:
        body["signature_name"] = signature_name
    return json.dumps(body, separators=(",", ":")).encode()


def request_batches(rows: Sequence[Mapping[str, Any]], rows_per_request: int,
                    limit: int = 256) -> list[list[Mapping[str, Any]]]:
    """Up to ``limit`` requests of ``rows_per_request`` rows each, cycling over the rows."""
    count = max(1, min(limit, math.ceil(len(rows) / rows_per_request)))
    return [[rows[(i * rows_per_request + j) % len(rows)] for j in range(rows_per_request)]
            for i in range(count)]


def prepare_target(transport: str, host: str, port: int, model: str,
                   rows: Sequence[Mapping[str, Any]], *, rows_per_request: int = 1,
                   signature_name: str = "", timeout: float = 10.0,
                   connections: int = 1) -> Target:
    """Encodes the requests once and checks that the endpoint answers the first one.

    Raises:
        ServingError: The endpoint is unreachable or rejects the request (code and message).
        ValueError: The rows do not all have the same features.
    """
    from skewless.serving.client import GrpcClient, RestClient

    batches = request_batches(rows, rows_per_request)
    if transport == "rest":
        path = f"/v1/models/{model}:predict"
        bodies = tuple(rest_body(batch, signature_name) for batch in batches)
        with RestClient(host, port, timeout=timeout, retries=1) as client:
            client.request("POST", path, json.loads(bodies[0]))
    else:
        with GrpcClient(host, port, timeout=timeout, retries=1) as client:
            client.predict(model, batches[0], signature_name=signature_name)
            requests = [client.predict_request(model, batch, signature_name=signature_name)
                        for batch in batches]
        path = GRPC_PREDICT
        bodies = tuple(r.SerializeToString() for r in requests)
    return Target(transport, host, port, path, bodies, timeout,  # type: ignore[arg-type]
                  connections)
