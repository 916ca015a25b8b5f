"""Serving benchmark: in-process signature, `skewless serve`, and a FastAPI peer, in one run.

Cells, measured one after the other on the same machine:
- in-process ``serving_default`` (``tf.saved_model.load``) at batch 1 and batch 64;
- ``skewless serve`` with batching, over REST and over gRPC, single-row requests at concurrency 64
  (and with ``--workers 2`` too when ``skewless serve`` has that flag);
- the peer: a FastAPI + uvicorn app serving the same ``serving_default``
  (``benchmarks/fastapi_peer.py``) with 1 and with 2 workers, over REST, same load;
- ``skewless serve`` logging every request (``logging_config`` at sampling rate 1.0), over
  REST and gRPC, for the cost of request logging;
- the gRPC floor: a ``grpc.aio`` PredictionService that answers every request with a stored
  response and does no work (``benchmarks/grpc_floor.py``), the ceiling of any Python gRPC front
  end under the same load.

Every server runs as its own process, started by its own command line, so each cell pays the same
process and socket costs. Load comes from ``skewless.serving.load_generator`` worker processes
(asyncio, pre-encoded requests, closed loop) after a warm-up; their CPU is in the table, so a
saturated load generator shows. gRPC load to ``--workers 2`` goes over 4 connections (the
processes share connections, not requests). For ``skewless serve`` cells, "handler p99" is the
p99 the server itself measured over the cell (its Prometheus latency histogram, from the call
reaching the handler to the answer); the gap to the client's p99 is time spent before the
handler: waiting to be read or accepted, on the wire, in the client. Each cell also shows the
CPU steal while it ran:
the share of the machine the hypervisor gave to other guests, which on a shared VM moves every
figure; compare ratios within one run, and distrust a cell with much steal. Prints a Markdown
table and writes JSON.

    .venv/bin/python benchmarks/serving.py [--model_base_path DIR] [--duration 10]

Without ``--model_base_path`` it serves ``artifacts/serving/taxi`` (``make demo`` pushes it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
PUSHED_MODEL = REPO / "artifacts" / "serving" / "taxi"
BATCHING = {"max_batch_size": 128, "batch_timeout_micros": 0, "num_batch_threads": 1,
            "max_enqueued_batches": 1000}
CONCURRENCY = 64
METRICS_PATH = "/monitoring/prometheus/metrics"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server_process(command: list[str], env: dict[str, str] | None = None):
    """A server started by its command line, stopped with SIGTERM (SIGKILL after 20 s)."""
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def ready_target(process, transport: str, port: int, model: str, rows, timeout: float = 240):
    """The encoded requests, once the server answers the first one."""
    from skewless.serving.errors import ServingError
    from skewless.serving.loadtest import prepare_target

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {process.args}")
        try:
            return prepare_target(transport, "127.0.0.1", port, model, rows, timeout=30)
        except ServingError as error:
            if error.code.name != "UNAVAILABLE" or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _cpu_ticks() -> list[int]:
    """The machine's CPU time counters (user, nice, system, idle, iowait, irq, softirq, steal)."""
    with open("/proc/stat", encoding="ascii") as handle:
        return [int(v) for v in handle.readline().split()[1:9]]


def latency_buckets(metrics_url: str, entrypoint: str) -> dict[float, float]:
    """Cumulative counts of the server's Predict latency histogram (microseconds) for one
    entrypoint (``REST`` or ``GRPC``), summed over models and statuses."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (sample.name == ":tensorflow:serving:request_latency_bucket"
                    and labels.get("API") == "predict" and labels.get("entrypoint") == entrypoint):
                bound = float(labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def histogram_quantile(before: dict[float, float], after: dict[float, float], q: float):
    """The q-quantile of what a cumulative histogram counted between two scrapes, interpolated
    linearly inside its bucket as Prometheus's histogram_quantile does; None if it counted
    nothing."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return lower


def measure(target, duration: float, warmup: float, processes: int,
            metrics_url: str = "") -> dict[str, Any]:
    """One closed-loop cell at CONCURRENCY, after a warm-up.

    ``steal_pct`` is the share of the machine's CPU time the hypervisor gave to other guests
    while the cell ran: a cell measured with much steal ran on less than the machine. With a
    ``metrics_url`` (a skewless server's Prometheus endpoint), ``handler_p99_ms`` is the p99 the
    server measured from the call reaching its handler to the answer: the rest of the client's
    p99 is spent outside the handler (waiting to be read or accepted, on the wire, in the
    client).
    """
    from skewless.serving.load_generator import WorkerPool
    from skewless.serving.loadtest import Ramp, Slo, summarize_step
    from skewless.serving.resources import Usage

    entrypoint = target.transport.upper()
    with WorkerPool(target, processes) as pool:
        pool.run("concurrency", CONCURRENCY, warmup)
        latency = latency_buckets(metrics_url, entrypoint) if metrics_url else {}
        before = _cpu_ticks()
        results = pool.run("concurrency", CONCURRENCY, duration)
        ticks = [b - a for a, b in zip(before, _cpu_ticks(), strict=True)]
    handler_p99 = None
    if metrics_url:
        handler_p99 = histogram_quantile(latency, latency_buckets(metrics_url, entrypoint), 0.99)
    step = summarize_step(CONCURRENCY, Ramp("concurrency", (CONCURRENCY,), duration), results,
                          Usage(), Slo(p99_ms=1e9, max_error_rate=1.0))
    return {"rows_per_s": step.rows_per_second, "p50_ms": step.p50_ms, "p90_ms": step.p90_ms,
            "p99_ms": step.p99_ms, "errors": step.errors + step.timeouts,
            "handler_p99_ms": None if handler_p99 is None else handler_p99 / 1000,
            "client_cpu_cores": step.generator_cpu_cores,
            "steal_pct": 100 * ticks[7] / max(sum(ticks), 1)}


def in_process_rows_per_s(model_dir: str, rows: list[dict], seconds: float):
    """Rows/s of ``serving_default`` called in this process at batch 1 and 64; its inputs."""
    import numpy as np
    import tensorflow as tf

    signature = tf.saved_model.load(model_dir).signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    rates = {}
    for batch in (1, 64):
        chunk = [rows[i % len(rows)] for i in range(batch)]
        feed = {}
        for name, spec in specs.items():
            values = [row[name] for row in chunk]
            if spec.dtype == tf.string:
                feed[name] = tf.constant(np.array([str(v).encode() for v in values],
                                                  dtype=object))
            else:
                feed[name] = tf.constant(values, dtype=spec.dtype)
        for _ in range(20):
            signature(**feed)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            signature(**feed)
            calls += 1
        rates[batch] = calls * batch / (time.perf_counter() - start)
    return rates, sorted(specs)


LOGGING_CELL = "skewless serve (batching, request log 1.0)"


def _logging_config(model_name: str, base: Path) -> Path:
    """A model config file that logs every request (sampling 1.0) into a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="skewless-bench-"))
    path = folder / "models.config"
    path.write_text(
        f'model_config_list {{ config {{ name: "{model_name}" base_path: "{base}"\n'
        f'  logging_config {{\n'
        f'    log_collector_config {{ type: "tfrecord" filename_prefix: "{folder}/logs/log" }}\n'
        f'    sampling_config {{ sampling_rate: 1.0 }}\n'
        f'  }}\n}} }}\n')
    return path


def _stored_response(target) -> str:
    """A file holding the PredictResponse the server gives for the target's first request."""
    import grpc

    with grpc.insecure_channel(f"{target.host}:{target.port}") as channel:
        call = channel.unary_unary(target.path)
        answer = call(target.bodies[0], timeout=30)
    path = Path(tempfile.mkdtemp(prefix="skewless-bench-")) / "response.pb"
    path.write_bytes(answer)
    return str(path)


def _wait_for_grpc(process, port: int, timeout: float = 60) -> None:
    import grpc

    if process.poll() is not None:
        raise RuntimeError(f"server exited with {process.returncode}: {process.args}")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)


def serve_has_workers() -> bool:
    """Whether this checkout's ``skewless serve`` has ``--workers``."""
    from click.testing import CliRunner

    from skewless.cli import main

    return "--workers" in CliRunner().invoke(main, ["serve", "--help"]).output


def _example_model(folder: Path) -> None:
    """A taxi-like example model, for a checkout without a pushed model."""
    sys.path.insert(0, str(REPO))  # a test fixture (tests/serving/), not installed code
    from tests.serving import example_models

    example_models.export_taxi_model(str(folder))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_base_path", default="")
    parser.add_argument("--model_name", default="taxi")
    parser.add_argument("--rows", default=str(REPO / "data" / "taxi" / "rows.json"))
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds per cell.")
    parser.add_argument("--warmup", type=float, default=2.0, help="Seconds before each cell.")
    parser.add_argument("--processes", type=int, default=1, help="Load generator processes.")
    parser.add_argument("--example-model", action="store_true",
                        help="Serve a taxi-like example model instead of a pushed one.")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serving.json"))
    args = parser.parse_args(argv)

    from skewless.serving import versions
    from skewless.serving.demo import load_rows

    base = Path(args.model_base_path or PUSHED_MODEL).resolve()
    rows = load_rows(args.rows)
    if args.example_model:
        base = Path(tempfile.mkdtemp(prefix="skewless-bench-")) / args.model_name
        _example_model(base / "1")
    found = versions.find_versions(str(base))
    if not found:
        print(f"no model versions under {base}: run `make demo` first, or give "
              f"--model_base_path or --example-model", file=sys.stderr)
        return 2
    model_dir = found[max(found)]
    cells: list[dict[str, Any]] = []

    def record(cell: dict[str, Any]) -> None:
        cells.append(cell)
        print(_row(cell), file=sys.stderr, flush=True)

    before = _cpu_ticks()
    rates, inputs = in_process_rows_per_s(model_dir, rows, args.duration)
    ticks = [b - a for a, b in zip(before, _cpu_ticks(), strict=True)]
    rows = [{name: row[name] for name in inputs} for row in rows]  # the signature's features
    for batch, rate in rates.items():
        record({"server": "in-process serving_default", "transport": "-", "processes": 1,
                "rows_per_request": batch, "concurrency": 1, "rows_per_s": rate,
                "steal_pct": 100 * ticks[7] / max(sum(ticks), 1)})

    batching_file = Path(tempfile.mkdtemp(prefix="skewless-bench-")) / "batching.txt"
    batching_file.write_text("".join(f"{k} {{ value: {v} }}\n" for k, v in BATCHING.items()))
    monitoring_file = batching_file.with_name("monitoring.txt")
    monitoring_file.write_text(f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}\n')
    # (server label, processes, request logging at sampling 1.0)
    variants = [("skewless serve (batching)", 1, False)]
    if serve_has_workers():
        variants.append(("skewless serve (batching)", 2, False))
    variants.append((LOGGING_CELL, 1, True))
    for label, workers, logging in variants:
        grpc_port, rest_port = free_port(), free_port()
        command = [sys.executable, "-m", "skewless", "serve", f"--port={grpc_port}",
                   f"--rest_api_port={rest_port}", f"--batching_parameters_file={batching_file}",
                   f"--monitoring_config_file={monitoring_file}"]
        if logging:
            command.append(f"--model_config_file={_logging_config(args.model_name, base)}")
        else:
            command += [f"--model_name={args.model_name}", f"--model_base_path={base}"]
        if workers > 1:
            command.append(f"--workers={workers}")
        with server_process(command) as process:
            for transport, port in (("rest", rest_port), ("grpc", grpc_port)):
                target = ready_target(process, transport, port, args.model_name, rows)
                # The processes share connections, not requests: give each gRPC worker some.
                target = dataclasses.replace(target, connections=4 if workers > 1 else 1)
                record({"server": label, "transport": transport,
                        "processes": workers, "rows_per_request": 1,
                        "concurrency": CONCURRENCY,
                        **measure(target, args.duration, args.warmup, args.processes,
                                  f"http://127.0.0.1:{rest_port}{METRICS_PATH}")})
            if workers == 1 and not logging:
                floor_response = _stored_response(target)

    port = free_port()
    command = [sys.executable, str(REPO / "benchmarks" / "grpc_floor.py"), f"--port={port}",
               f"--response={floor_response}"]
    with server_process(command) as process:
        target = dataclasses.replace(target, port=port)
        _wait_for_grpc(process, port)
        record({"server": "grpc.aio floor (empty handler)", "transport": "grpc",
                "processes": 1, "rows_per_request": 1, "concurrency": CONCURRENCY,
                **measure(target, args.duration, args.warmup, args.processes)})

    for workers in (1, 2):
        port = free_port()
        command = [sys.executable, "-m", "uvicorn", "benchmarks.fastapi_peer:app",
                   "--host", "127.0.0.1", f"--port={port}", f"--workers={workers}",
                   "--log-level=warning", "--no-access-log"]
        env = {"PEER_MODEL_DIR": model_dir, "PEER_MODEL_NAME": args.model_name}
        with server_process(command, env) as process:
            target = ready_target(process, "rest", port, args.model_name, rows)
            record({"server": "FastAPI + uvicorn", "transport": "rest", "processes": workers,
                    "rows_per_request": 1, "concurrency": CONCURRENCY,
                    **measure(target, args.duration, args.warmup, args.processes)})

    results = {
        "model": model_dir, "cpus": os.cpu_count(), "duration_s": args.duration,
        "machine": f"{platform.system()} {platform.machine()} {platform.python_version()}",
        "batching_parameters": BATCHING, "cells": cells, "comparisons": comparisons(cells),
    }
    print(render(results))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    print(f"\nwrote {args.out}")
    return 0


def _find(cells, server: str, transport: str, processes: int) -> dict | None:
    return next((c for c in cells if c["server"].startswith(server)
                 and c["transport"] == transport and c["processes"] == processes), None)


def comparisons(cells: list[dict]) -> list[dict]:
    """The issue's targets, as ratios within this run."""
    batch_1 = next(c for c in cells if c["server"].startswith("in-process")
                   and c["rows_per_request"] == 1)
    checks = []
    for processes in (1, 2):
        peer = _find(cells, "FastAPI", "rest", processes)
        for transport in ("rest", "grpc"):
            cell = _find(cells, "skewless", transport, processes)
            if cell is None:
                continue
            checks.append({"target": f"skewless {transport} ({processes} proc) >= 3x in-process "
                                     "batch-1 rows/s",
                           "value": cell["rows_per_s"] / batch_1["rows_per_s"], "threshold": 3.0})
            checks.append({"target": f"skewless {transport} ({processes} proc) p99 <= 50 ms",
                           "value": cell["p99_ms"], "threshold": 50.0, "at_most": True})
            if peer is not None:
                checks.append({"target": f"skewless {transport} >= 3x FastAPI rows/s "
                                         f"({processes} proc each)",
                               "value": cell["rows_per_s"] / peer["rows_per_s"],
                               "threshold": 3.0})
                checks.append({"target": f"skewless {transport} p99 below FastAPI's "
                                         f"({processes} proc each)",
                               "value": cell["p99_ms"] / peer["p99_ms"], "threshold": 1.0,
                               "at_most": True, "ratio": True})
    for transport in ("rest", "grpc"):
        plain = _find(cells, "skewless serve (batching)", transport, 1)
        logged = next((c for c in cells if c["server"] == LOGGING_CELL
                       and c["transport"] == transport), None)
        if plain is not None and logged is not None:  # what request logging costs
            checks.append({"target": f"skewless {transport} p99 with request logging at 1.0, "
                                     "vs without", "value": logged["p99_ms"] / plain["p99_ms"],
                           "threshold": 1.25, "at_most": True, "ratio": True})
    floor = _find(cells, "grpc.aio floor", "grpc", 1)
    if floor is not None:  # whether any Python gRPC front end could meet the target here
        checks.append({"target": "grpc.aio floor (no work at all) >= 3x in-process batch-1 "
                                 "rows/s", "value": floor["rows_per_s"] / batch_1["rows_per_s"],
                       "threshold": 3.0})
    for check in checks:
        at_most = check.get("at_most", False)
        check["met"] = (check["value"] <= check["threshold"] if at_most
                        else check["value"] >= check["threshold"])
    return checks


def _number(value, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _row(cell: dict) -> str:
    return (f"| {cell['server']} | {cell['transport']} | {cell['processes']} | "
            f"{cell['concurrency']} | {cell['rows_per_request']} | "
            f"{_number(cell['rows_per_s'], 0)} | {_number(cell.get('p50_ms'))} | "
            f"{_number(cell.get('p99_ms'))} | {_number(cell.get('handler_p99_ms'))} | "
            f"{cell.get('errors', '')} | "
            f"{_number(cell.get('client_cpu_cores'), 2)} | {_number(cell.get('steal_pct'), 0)} |")


def render(results: dict) -> str:
    """The Markdown tables of a run."""
    lines = [
        f"Model: {results['model']}; {results['cpus']} CPUs; {results['duration_s']:g} s per "
        f"cell; skewless batching: {results['batching_parameters']}",
        "",
        "| server | transport | processes | concurrency | rows/req | rows/s | p50 ms | p99 ms "
        "| handler p99 ms | errors | client CPU | steal % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(_row(cell) for cell in results["cells"]),
        "", "| target | measured | met |", "|---|---|---|",
    ]
    for check in results["comparisons"]:
        unit = " ms" if check.get("at_most") and not check.get("ratio") else "x"
        lines.append(f"| {check['target']} | {check['value']:.2f}{unit} | "
                     f"{'yes' if check['met'] else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
