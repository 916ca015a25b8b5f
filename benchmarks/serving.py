"""Serving benchmark: in-process signature vs. the served model over REST and gRPC.

One run on one machine. The server runs in this process and the load generator in one child
process (asyncio clients: aiohttp for REST, grpc.aio with pre-serialized requests for gRPC;
``concurrency`` requests in flight, each sent as soon as the previous one answered), so both
share the machine's cores as they would on a single host. The table reports the client's CPU so
a saturated load generator shows; on 2 cores it stays under half a core. Prints a table and
writes JSON.

Batching parameters are what we would set for this model on a 2-core host: ``max_batch_size``
128 and ``batch_timeout_micros`` 0 (a free batch thread runs whatever is queued, so a lone
request waits for nothing), and one batch thread. The model call costs nearly the same for 1 or
64 rows, and the Python front end needs the other core: measured at 64 concurrent single-row
requests, two batch threads ran batches of 4-8 rows at 1,150-1,500 rows/s, one ran batches of
8-10 rows at 1,250-2,000 rows/s.

    .venv/bin/python benchmarks/serving.py [--model_base_path DIR] [--duration 3]

Without ``--model_base_path`` it serves ``artifacts/serving/taxi`` when the pipeline has pushed
a model there, else a taxi-like example model exported to a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The example model is a test fixture (tests/serving/example_models.py), not installed code.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PUSHED_MODEL = os.path.join("artifacts", "serving", "taxi")
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"


# -- load generator (child process; imports neither TensorFlow nor our package) -----------------


def _load_worker(transport: str, port: int, model: str, payload: bytes, concurrency: int,
                 warmup: float, duration: float, results) -> None:
    cpu = time.process_time()
    outcome = asyncio.run(_drive(transport, port, model, payload, concurrency, warmup, duration))
    outcome["client_cpu_s"] = time.process_time() - cpu
    results.put(outcome)


async def _drive(transport, port, model, payload, concurrency, warmup, duration):
    latencies: list[float] = []
    errors = 0
    start_measure = time.perf_counter() + warmup
    stop = start_measure + duration

    if transport == "rest":
        import aiohttp

        url = f"http://127.0.0.1:{port}/v1/models/{model}:predict"
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def call() -> bool:
                async with session.post(url, data=payload,
                                        headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    return r.status == 200

            await _run_workers(call, concurrency, start_measure, stop, latencies)
    else:
        import grpc

        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            method = channel.unary_unary(PREDICT_METHOD)

            async def call() -> bool:
                try:
                    await method(payload, timeout=30)
                    return True
                except grpc.aio.AioRpcError:
                    return False

            await _run_workers(call, concurrency, start_measure, stop, latencies)
    errors = sum(1 for latency in latencies if latency < 0)
    ok = [latency for latency in latencies if latency >= 0]
    return {"latencies": ok, "errors": errors, "seconds": duration}


async def _run_workers(call, concurrency, start_measure, stop, latencies) -> None:
    async def worker() -> None:
        while True:
            begin = time.perf_counter()
            if begin >= stop:
                return
            ok = await call()
            end = time.perf_counter()
            if begin >= start_measure and end <= stop:
                latencies.append(end - begin if ok else -1.0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def run_load(transport: str, port: int, model: str, payload: bytes, concurrency: int,
             warmup: float, duration: float) -> dict[str, Any]:
    """Runs one load cell in a child process and returns its latencies."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_load_worker, args=(
        transport, port, model, payload, concurrency, warmup, duration, results))
    process.start()
    outcome = results.get(timeout=warmup + duration + 120)
    process.join(30)
    return outcome


# -- measurements --------------------------------------------------------------------------------


def summarize(outcome: dict[str, Any], rows_per_request: int) -> dict[str, float]:
    """Rows/s, requests/s and latency percentiles (ms) of one load cell."""
    latencies = sorted(outcome["latencies"])
    count = len(latencies)

    def percentile(q: float) -> float:
        return latencies[min(count - 1, int(q * count))] * 1e3 if count else float("nan")

    return {
        "requests_per_s": count / outcome["seconds"],
        "rows_per_s": count * rows_per_request / outcome["seconds"],
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "errors": outcome["errors"],
        "requests": count,
    }


def in_process_rows_per_s(model_dir: str, columns_by_batch: dict[int, dict], seconds: float):
    """Rows/s of ``serving_default`` called in-process (tf.saved_model.load), per batch size."""
    import tensorflow as tf

    signature = tf.saved_model.load(model_dir).signatures["serving_default"]
    rates = {}
    for batch, columns in columns_by_batch.items():
        feed = {k: tf.constant(v) for k, v in columns.items()}
        for _ in range(20):
            signature(**feed)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            signature(**feed)
            calls += 1
        rates[batch] = calls * batch / (time.perf_counter() - start)
    return rates


def synthetic_rows(signature_inputs: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Rows for a model whose features we do not know: one plausible value per dtype."""
    value = {"DT_FLOAT": 1.5, "DT_DOUBLE": 1.5, "DT_INT64": 3, "DT_INT32": 3,
             "DT_STRING": "Cash"}
    return [{name: value.get(info["dtype"], 1) for name, info in signature_inputs.items()}
            for _ in range(count)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_base_path", default="")
    parser.add_argument("--model_name", default="taxi")
    parser.add_argument("--duration", type=float, default=3.0, help="Seconds per cell.")
    parser.add_argument("--warmup", type=float, default=0.7, help="Seconds before each cell.")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results", "serving.json"))
    args = parser.parse_args(argv)

    import logging

    from tensorflow_serving.apis import predict_pb2

    from skewless.serving import config as config_lib
    from skewless.serving import tensors, versions
    from skewless.serving.client import RestClient
    from skewless.serving.server import ModelServer, ServerOptions
    from tests.serving import example_models

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    base = args.model_base_path
    source = "given"
    if not base:
        if versions.find_versions(PUSHED_MODEL):
            base, source = PUSHED_MODEL, "pushed by the pipeline"
        else:
            base = os.path.join(tempfile.mkdtemp(prefix="skewless-bench-"), "taxi")
            example_models.export_taxi_model(os.path.join(base, "1"))
            source = "example taxi-like model (no pushed model found)"
    model_dir = versions.find_versions(base)[max(versions.find_versions(base))]

    batching = config_lib.BatchingConfig(max_batch_size=128, batch_timeout_micros=0,
                                         max_enqueued_batches=1000, num_batch_threads=1)
    cells = [(c, 1) for c in (1, 16, 64)] + [(4, 64)]
    results: dict[str, Any] = {"cells": []}
    rows_for_batch: dict[int, list[dict]] = {}
    for enable_batching in (False, True):
        options = ServerOptions(
            models=config_lib.single_model_config(args.model_name, base), port=0,
            rest_api_port=0, file_system_poll_wait_seconds=0,
            batching=batching if enable_batching else None,
        )
        with ModelServer(options) as server:
            if not rows_for_batch:
                with RestClient(port=server.rest_port) as client:
                    metadata = client.metadata(args.model_name)
                inputs = metadata["metadata"]["signature_def"]["signature_def"][
                    "serving_default"]["inputs"]
                if set(inputs) == set(example_models.TAXI_FEATURES):
                    rows_for_batch = {n: example_models.taxi_rows(n, seed=n) for n in (1, 64)}
                else:
                    rows_for_batch = {n: synthetic_rows(inputs, n) for n in (1, 64)}
                dtypes = {name: info["dtype"] for name, info in inputs.items()}
            for concurrency, rows_per_request in cells:
                rows = rows_for_batch[rows_per_request]
                for transport in ("rest", "grpc"):
                    if transport == "rest":
                        payload = json.dumps({"instances": rows}).encode()
                        port = server.rest_port
                    else:
                        request = predict_pb2.PredictRequest()
                        request.model_spec.name = args.model_name
                        for name, array in _columns(rows, dtypes).items():
                            request.inputs[name].CopyFrom(tensors.to_tensor_proto(array))
                        payload = request.SerializeToString()
                        port = server.grpc_port
                    batches_before = _batch_totals(server)
                    outcome = run_load(transport, port, args.model_name, payload, concurrency,
                                       args.warmup, args.duration)
                    batches, rows_batched = (
                        after - before
                        for after, before in zip(_batch_totals(server), batches_before,
                                                 strict=True))
                    cell = {"transport": transport, "batching": enable_batching,
                            "concurrency": concurrency, "rows_per_request": rows_per_request,
                            **summarize(outcome, rows_per_request),
                            "client_cpu_cores": outcome["client_cpu_s"] / (
                                args.warmup + args.duration),
                            "mean_batch_rows": rows_batched / batches if batches else None}
                    results["cells"].append(cell)
                    print(_row(cell), file=sys.stderr, flush=True)

    columns_by_batch = {n: _columns(rows_for_batch[n], dtypes) for n in (1, 64)}
    rates = in_process_rows_per_s(model_dir, columns_by_batch, args.duration)
    results.update(
        model=model_dir, model_source=source, cpus=os.cpu_count(),
        machine=f"{platform.system()} {platform.machine()} {platform.python_version()}",
        in_process_rows_per_s={str(k): v for k, v in rates.items()},
        batching_parameters={"max_batch_size": batching.max_batch_size,
                             "batch_timeout_micros": batching.batch_timeout_micros,
                             "num_batch_threads": batching.num_batch_threads,
                             "max_enqueued_batches": batching.max_enqueued_batches},
        duration_s=args.duration,
    )
    results["targets"] = targets(results["cells"], rates)
    print(render(results))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    print(f"\nwrote {args.out}")
    return 0


def _batch_totals(server) -> tuple[float, float]:
    """Batches run and rows in them so far, from the server's input batch size histogram."""
    count = total = 0.0
    for metric in server.metrics.input_batch_size.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                count += sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
    return count, total


def _columns(rows: list[dict], dtypes: dict[str, str]):
    import numpy as np

    columns = {}
    for name, dtype in dtypes.items():
        values = [row[name] for row in rows]
        if dtype == "DT_STRING":
            array = np.empty(len(values), dtype=object)
            array[:] = [v.encode() for v in values]
        else:
            array = np.asarray(values, dtype={"DT_FLOAT": np.float32, "DT_DOUBLE": np.float64,
                                              "DT_INT32": np.int32}.get(dtype, np.int64))
        columns[name] = array
    return columns


def _find(cells, transport, batching, concurrency, rows):
    return next(c for c in cells if (c["transport"], c["batching"], c["concurrency"],
                                     c["rows_per_request"]) == (transport, batching,
                                                                concurrency, rows))


def targets(cells: list[dict], rates: dict[int, float]) -> list[dict]:
    """The issue's targets, as ratios within this run."""
    checks = []
    for transport in ("rest", "grpc"):
        cell = _find(cells, transport, True, 64, 1)
        checks.append({"target": f"{transport} 1-row c64 batching >= 3x in-process batch-1",
                       "value": cell["rows_per_s"] / rates[1], "threshold": 3.0})
    for transport, share in (("grpc", 0.6), ("rest", 0.4)):
        best = max(_find(cells, transport, b, 4, 64)["rows_per_s"] for b in (False, True))
        checks.append({"target": f"{transport} 64-row c4 >= {share:.0%} of in-process batch-64",
                       "value": best / rates[64], "threshold": share})
    for transport in ("rest", "grpc"):
        for batching in (False, True):
            cell = _find(cells, transport, batching, 16, 1)
            checks.append({"target": f"{transport} 1-row c16 batching={'on' if batching else 'off'}"
                                     " p99 <= 25 ms",
                           "value": cell["p99_ms"], "threshold": 25.0, "at_most": True})
    for check in checks:
        at_most = check.get("at_most", False)
        check["met"] = (check["value"] <= check["threshold"] if at_most
                        else check["value"] >= check["threshold"])
    return checks


def _row(cell: dict) -> str:
    batch = cell.get("mean_batch_rows")
    return (f"| {cell['transport']:<4} | {'on' if cell['batching'] else 'off':<8} | "
            f"{cell['concurrency']:>11} | {cell['rows_per_request']:>8} | "
            f"{cell['rows_per_s']:>9,.0f} | {cell['p50_ms']:>7.2f} | {cell['p99_ms']:>7.2f} | "
            f"{cell['errors']:>6} | {'-' if batch is None else f'{batch:.1f}':>10} | "
            f"{cell.get('client_cpu_cores', float('nan')):>10.2f} |")


def render(results: dict) -> str:
    """The Markdown table of a run."""
    rates = results["in_process_rows_per_s"]
    lines = [
        f"Model: {results['model']} ({results['model_source']}); {results['cpus']} CPUs; "
        f"{results['duration_s']:.0f} s per cell; batching: {results['batching_parameters']}; "
        "load: one client process (asyncio), `concurrency` requests in flight",
        "",
        "| path | batching | concurrency | rows/req | rows/s | p50 ms | p99 ms | errors "
        "| mean batch | client CPU |",
        "|------|----------|-------------|----------|--------|--------|--------|--------"
        "|------------|------------|",
        f"| in-process serving_default | - | 1 | 1 | {rates['1']:,.0f} | | | | | |",
        f"| in-process serving_default | - | 1 | 64 | {rates['64']:,.0f} | | | | | |",
    ]
    lines += [_row(cell) for cell in results["cells"]]
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for check in results["targets"]:
        unit = " ms" if check.get("at_most") else "x"
        lines.append(f"| {check['target']} | {check['value']:.2f}{unit} | "
                     f"{'yes' if check['met'] else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
