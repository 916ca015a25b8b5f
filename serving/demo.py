"""The end of ``make demo``: serve the pushed model, predict over REST and gRPC, print, stop."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from skewless.serving.client import GrpcClient, RestClient
from skewless.serving.config import single_model_config
from skewless.serving.server import ModelServer, ServerOptions


def load_rows(path: str) -> list[dict[str, Any]]:
    """Reads feature rows from a JSON file: a list of objects, or ``{"instances": [...]}``.

    Raises:
        ValueError: The file is not JSON, or does not hold a non-empty list of objects.
    """
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON: {error}") from None
    if isinstance(data, dict) and "instances" in data:
        data = data["instances"]
    if not isinstance(data, list) or not data or not all(isinstance(r, dict) for r in data):
        raise ValueError(f"{path}: expected a non-empty JSON list of feature objects")
    return data


def format_outputs(outputs: Mapping[str, np.ndarray]) -> str:
    """One line per output: name and values."""
    def text(value) -> str:
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    return "\n".join(
        f"  {name}: [{', '.join(text(v) for v in np.asarray(values).reshape(-1))}]"
        for name, values in sorted(outputs.items())
    )


def run(
    model_base_path: str,
    rows: Sequence[Mapping[str, Any]],
    model_name: str = "taxi",
    echo: Callable[[str], None] = print,
    timeout: float = 30.0,
) -> dict[str, dict[str, np.ndarray]]:
    """Starts a server on free local ports, predicts ``rows`` over REST and gRPC, stops it.

    Args:
        model_base_path: The folder of integer version folders (the pushed model).
        rows: Raw feature rows.
        model_name: The name to serve the model under.
        echo: Where the report lines go.
        timeout: Seconds per client call.

    Returns:
        ``{"rest": outputs, "grpc": outputs}``.

    Raises:
        ConfigError: The base path is missing.
        ServingError: A prediction failed.
        AssertionError: REST and gRPC disagree by more than 1e-6 (relative, for large values).
    """
    options = ServerOptions(
        models=single_model_config(model_name, model_base_path),
        port=0,
        rest_api_port=0,
        file_system_poll_wait_seconds=0,
    )
    with ModelServer(options) as server:
        version = server.manager.available_versions(model_name)
        echo(f"Serving {model_name} version(s) {version} on gRPC :{server.grpc_port}, "
             f"REST :{server.rest_port}")
        with RestClient(port=server.rest_port, timeout=timeout) as rest:
            by_rest = rest.predict(model_name, rows)
        with GrpcClient(port=server.grpc_port, timeout=timeout) as grpc_client:
            by_grpc = grpc_client.predict(model_name, rows)
        echo(f"REST predictions for {len(rows)} rows:\n{format_outputs(by_rest)}")
        echo(f"gRPC predictions for {len(rows)} rows:\n{format_outputs(by_grpc)}")
        for name, values in by_rest.items():
            if values.dtype.kind in "fi":
                np.testing.assert_allclose(values, by_grpc[name], atol=1e-6, rtol=1e-6)
    echo("Server stopped.")
    return {"rest": by_rest, "grpc": by_grpc}
