"""Does a model load and answer on this server? The check behind the InfraValidator component.

The model is served as TF Serving would serve it (its warm-up requests replayed on load) on free
loopback ports; each row is then sent as one Predict request over REST and over gRPC, and every
answer must be well formed (the signature's outputs, one value per row, finite numbers) and
equal the prediction made in-process by the very version the server loaded. Load time and the
slowest request are held against limits.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from skewless.serving import inference
from skewless.serving.client import GrpcClient, RestClient, rows_to_arrays
from skewless.serving.config import ModelConfig
from skewless.serving.errors import ServingError
from skewless.serving.manager import AVAILABLE
from skewless.serving.server import ModelServer, ServerOptions
from skewless.serving.service import ModelSpec

MODEL_NAME = "infra-validation-model"  # as TFX's InfraValidator names the model it serves
# Outputs equal the in-process prediction up to float32 rounding of the JSON round trip.
RTOL, ATOL = 1e-5, 1e-6


@dataclass(frozen=True)
class ValidationLimits:
    """How long loading (with warm-up) and the slowest request may take."""

    max_loading_seconds: float
    max_latency_ms: float


@dataclass(frozen=True)
class ValidationReport:
    """What the server did with the model. `problem` is one line, empty when all held."""

    load_seconds: float
    requests: int
    latency_ms_p50: float | None
    latency_ms_max: float | None
    problem: str

    @property
    def passed(self) -> bool:
        return not self.problem


class _Failed(Exception):
    """One line saying why the model does not serve."""


def answer_problem(
    answer: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], rows: int
) -> str:
    """Why an answer for `rows` rows is malformed or differs from the expected outputs ("" if
    it is neither)."""
    if set(answer) != set(expected):
        return f"outputs {sorted(answer)}, the signature declares {sorted(expected)}"
    for name in sorted(expected):
        got, want = np.asarray(answer[name]), np.asarray(expected[name])
        if got.shape[:1] != (rows,):
            return f"output {name} has shape {list(got.shape)}, not one value per row of {rows}"
        if got.shape != want.shape:
            return f"output {name} has shape {list(got.shape)}, expected {list(want.shape)}"
        if want.dtype.kind in "fc":
            if got.dtype.kind not in "fciu":
                return f"output {name} is {got.dtype}, expected numbers"
            if not np.all(np.isfinite(got)):
                return f"output {name} is not finite: {got.reshape(-1).tolist()}"
            if not np.allclose(got, want, rtol=RTOL, atol=ATOL):
                return (f"output {name} is {got.reshape(-1).tolist()}, the in-process "
                        f"prediction {want.reshape(-1).tolist()}")
        elif got.tolist() != want.tolist():
            return (f"output {name} is {got.reshape(-1).tolist()}, the in-process prediction "
                    f"{want.reshape(-1).tolist()}")
    return ""


def _in_process(server: ModelServer, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The loaded version's own predictions for the rows, without a transport in between."""
    with server.service.acquired(ModelSpec(MODEL_NAME)) as model:
        signature = inference.predict_signature(model, "")
        dtypes = {alias: spec.dtype for alias, spec in signature.inputs.items()}
        plan = inference.plan_predict(model, signature, rows_to_arrays(rows, dtypes))
        return plan.outputs(plan.run())


def _loaded(server: ModelServer) -> None:
    try:
        statuses = server.manager.status(MODEL_NAME)
    except ServingError as error:
        raise _Failed(f"the model did not load: {error.message}") from None
    for status in statuses:
        if status.state != AVAILABLE:
            raise _Failed(f"the model did not load: {status.error_message or status.state}")


def _ask(server: ModelServer, rows, expected, timeout: float) -> list[float]:
    """Sends every row over REST and gRPC; returns the latencies in ms."""
    clients: list[tuple[str, Callable[[], Any]]] = [
        ("REST", lambda: RestClient(port=server.rest_port, timeout=timeout, retries=0)),
        ("gRPC", lambda: GrpcClient(port=server.grpc_port, timeout=timeout, retries=0)),
    ]
    latencies = []
    for transport, make in clients:
        with make() as client:
            for index, row in enumerate(rows):
                started = time.perf_counter()
                try:
                    answer = client.predict(MODEL_NAME, [row])
                except ServingError as error:
                    raise _Failed(f"{transport} Predict of row {index} failed: "
                                  f"{error.code.name}: {error.message}") from None
                latencies.append((time.perf_counter() - started) * 1000)
                problem = answer_problem(answer, {k: v[index:index + 1]
                                                  for k, v in expected.items()}, 1)
                if problem:
                    raise _Failed(f"{transport} answer to row {index}: {problem}")
    return latencies


def validate_on_server(
    model_dir: str, rows: Sequence[Mapping[str, Any]], limits: ValidationLimits
) -> ValidationReport:
    """Serves the SavedModel in `model_dir` on free 127.0.0.1 ports and checks its answers.

    Args:
        model_dir: A SavedModel folder (with any warm-up file already in it).
        rows: Raw feature rows, one Predict request each per transport.
        limits: Load time and latency limits.

    Returns:
        The measurements, and the first problem found ("" when the model passed).
    """
    base = tempfile.mkdtemp(prefix="infra-validation-")
    os.symlink(os.path.abspath(model_dir), os.path.join(base, "1"))
    options = ServerOptions(
        models=(ModelConfig(name=MODEL_NAME, base_path=base),), port=0, rest_api_port=0,
        file_system_poll_wait_seconds=0, num_request_threads=2,
    )
    started = time.perf_counter()
    latencies: list[float] = []
    load_seconds = math.nan
    try:
        with ModelServer(options) as server:
            load_seconds = time.perf_counter() - started
            _loaded(server)
            try:
                expected = _in_process(server, rows)
            except (ServingError, ValueError) as error:
                raise _Failed(f"in-process Predict failed: {getattr(error, 'message', error)}"
                              ) from None
            problem = answer_problem(expected, expected, len(rows))
            if problem:
                raise _Failed(f"in-process Predict of {len(rows)} rows: {problem}")
            latencies = _ask(server, rows, expected, timeout=limits.max_latency_ms / 1000 + 5)
        problem = _over_limits(load_seconds, latencies, limits)
    except _Failed as failure:
        problem = str(failure)
    except OSError as error:
        problem = f"the server did not start: {error}"
    finally:
        os.unlink(os.path.join(base, "1"))
        os.rmdir(base)
    return ValidationReport(
        load_seconds=load_seconds,
        requests=len(latencies),
        latency_ms_p50=float(np.percentile(latencies, 50)) if latencies else None,
        latency_ms_max=max(latencies) if latencies else None,
        problem=problem,
    )


def _over_limits(load_seconds: float, latencies: list[float], limits: ValidationLimits) -> str:
    if load_seconds > limits.max_loading_seconds:
        return (f"loading took {load_seconds:.1f} s, more than the limit of "
                f"{limits.max_loading_seconds:g} s")
    slowest = max(latencies, default=0.0)
    if slowest > limits.max_latency_ms:
        return (f"the slowest request took {slowest:.1f} ms, more than the limit of "
                f"{limits.max_latency_ms:g} ms")
    return ""
