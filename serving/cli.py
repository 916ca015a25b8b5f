"""``skewless serve``, ``skewless predict`` and ``skewless serve-demo``.

``serve`` takes tensorflow_model_server's flag names; the commands are thin and call the
library (``ModelServer``, the clients, ``demo.run``).
"""

from __future__ import annotations

import json
import logging
import signal
import sys

import click

from skewless.serving import config as config_lib
from skewless.serving.config import ConfigError

_BOOL = click.BOOL


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d: %(levelname).1s %(name)s] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("tensorflow", "absl", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _flag(name: str, help_text: str, default: bool = False):
    # TF Serving's flags are written --name=true; a bare --name means true.
    return click.option(
        f"--{name}", type=_BOOL, default=default, is_flag=False, flag_value=True,
        show_default=True, help=help_text,
    )


@click.command("serve")
@click.option("--port", type=int, default=8500, show_default=True, help="gRPC port.")
@click.option("--rest_api_port", type=int, default=8501, show_default=True,
              help="REST port; 0 disables the REST API.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (0.0.0.0 for every interface).")
@click.option("--model_name", default="default", show_default=True,
              help="Name of the model (with --model_base_path).")
@click.option("--model_base_path", default="", help="Folder of integer version folders.")
@click.option("--model_config_file", default="",
              help="ModelServerConfig in text format (instead of --model_name/_base_path).")
@click.option("--model_config_file_poll_wait_seconds", type=float, default=0.0,
              show_default=True,
              help="Seconds between re-reads of --model_config_file; 0 never re-reads.")
@click.option("--file_system_poll_wait_seconds", type=float, default=1.0, show_default=True,
              help="Seconds between polls for new versions; 0 polls once.")
@_flag("enable_batching", "Merge concurrent requests into batches.")
@click.option("--batching_parameters_file", default="",
              help="BatchingParameters in text format (implies --enable_batching).")
@click.option("--monitoring_config_file", default="",
              help="MonitoringConfig in text format (Prometheus endpoint).")
@click.option("--rest_api_timeout_in_ms", type=int, default=30000, show_default=True,
              help="Deadline of a REST request.")
@click.option("--rest_api_max_body_bytes", type=int, default=64 * 1024 * 1024,
              show_default=True, help="Larger REST bodies get RESOURCE_EXHAUSTED (429).")
@click.option("--grpc_max_message_bytes", type=int, default=256 * 1024 * 1024,
              show_default=True, help="Largest gRPC message received or sent.")
@_flag("enable_model_warmup", "Replay assets.extra/tf_serving_warmup_requests.", True)
@click.option("--tensorflow_intra_op_parallelism", type=int, default=0, show_default=True)
@click.option("--tensorflow_inter_op_parallelism", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Server processes sharing the ports (SO_REUSEPORT), each with its own model "
                   "and batcher; /monitoring shows their totals.")
@_flag("reuse_port", "Bind with SO_REUSEPORT (set for each worker by --workers).")
@click.option("--worker_processes", type=click.IntRange(min=1), default=1, hidden=True,
              help="Processes sharing the ports (set for each worker by --workers).")
@click.option("--request_log_max_file_bytes", type=int, default=64 * 1024 * 1024,
              show_default=True,
              help="A request log file (logging_config in --model_config_file) is complete at "
                   "this size.")
@click.option("--request_log_max_file_seconds", type=float, default=300.0, show_default=True,
              help="... or this many seconds after its first record.")
@click.option("--request_log_queue_records", type=int, default=10_000, show_default=True,
              help="Log records that may wait for the writer; more are dropped and counted.")
def serve(**flags) -> None:
    """Serve SavedModels over TF Serving's gRPC and REST APIs."""
    _configure_logging()
    try:
        options = options_from_flags(**flags)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    if flags["workers"] > 1:
        from skewless.serving.workers import run_workers

        sys.exit(run_workers(flags, flags["workers"]))
    from skewless.serving.server import ModelServer

    server = ModelServer(options)
    try:
        server.start()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"Cannot open the ports: {error}") from None
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: server.stop())
    while not server.wait(0.5):
        pass


def options_from_flags(**flags):
    """Builds ServerOptions from ``serve``'s flags.

    Raises:
        ConfigError: A flag or config file is invalid; the message names it.
    """
    from skewless.serving.request_log import FileLimits
    from skewless.serving.server import ServerOptions

    if flags["model_config_file"]:
        if flags["model_base_path"]:
            raise ConfigError("Give --model_config_file or --model_base_path, not both")
        models = config_lib.load_model_config_file(flags["model_config_file"])
    else:
        models = config_lib.single_model_config(flags["model_name"], flags["model_base_path"])
    config_lib.check_base_paths(models)
    batching = None
    if flags["batching_parameters_file"]:
        batching = config_lib.load_batching_parameters_file(flags["batching_parameters_file"])
    elif flags["enable_batching"]:
        batching = config_lib.BatchingConfig()
    monitoring = config_lib.MonitoringConfig()
    if flags["monitoring_config_file"]:
        monitoring = config_lib.load_monitoring_config_file(flags["monitoring_config_file"])
    for name in ("port", "rest_api_port"):
        if not 0 <= flags[name] <= 65535:
            raise ConfigError(f"--{name} must be between 0 and 65535, got {flags[name]}")
    if flags["port"] == 0:
        raise ConfigError("--port must not be 0")
    if flags["model_config_file_poll_wait_seconds"] < 0:
        raise ConfigError("--model_config_file_poll_wait_seconds must not be negative")
    for name in ("request_log_max_file_bytes", "request_log_max_file_seconds",
                 "request_log_queue_records"):
        if flags[name] <= 0:
            raise ConfigError(f"--{name} must be positive, got {flags[name]:g}")
    return ServerOptions(
        models=models,
        host=flags["host"],
        port=flags["port"],
        rest_api_port=flags["rest_api_port"] or None,
        file_system_poll_wait_seconds=flags["file_system_poll_wait_seconds"],
        model_config_file=flags["model_config_file"],
        model_config_file_poll_wait_seconds=flags["model_config_file_poll_wait_seconds"],
        batching=batching,
        monitoring=monitoring,
        rest_api_timeout_in_ms=flags["rest_api_timeout_in_ms"],
        rest_api_max_body_bytes=flags["rest_api_max_body_bytes"],
        grpc_max_message_bytes=flags["grpc_max_message_bytes"],
        enable_model_warmup=flags["enable_model_warmup"],
        tensorflow_intra_op_parallelism=flags["tensorflow_intra_op_parallelism"],
        tensorflow_inter_op_parallelism=flags["tensorflow_inter_op_parallelism"],
        reuse_port=flags.get("reuse_port", False),
        worker_processes=flags.get("worker_processes", 1),
        request_log_limits=FileLimits(
            flags["request_log_max_file_bytes"], flags["request_log_max_file_seconds"]
        ),
        request_log_queue_records=flags["request_log_queue_records"],
    )


@click.command("predict")
@click.option("--rest", "transport", flag_value="rest", default=True, help="Use REST (default).")
@click.option("--grpc", "transport", flag_value="grpc", help="Use gRPC.")
@click.option("--model", required=True, help="Model name.")
@click.option("--json", "json_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Feature rows: a JSON list of objects, or {\"instances\": [...]}.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="Default 8501 (REST) or 8500 (gRPC).")
@click.option("--version", "model_version", type=int, default=None, help="Model version.")
@click.option("--label", default=None, help="Model version label.")
@click.option("--signature_name", default="", help="Signature (default serving_default).")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds.")
def predict(transport, model, json_path, host, port, model_version, label, signature_name,
            timeout) -> None:
    """Send feature rows to a running server and print the predictions as JSON."""
    from skewless.serving.client import GrpcClient, RestClient
    from skewless.serving.demo import load_rows
    from skewless.serving.errors import ServingError

    try:
        rows = load_rows(json_path)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    client_type = RestClient if transport == "rest" else GrpcClient
    port = port or (8501 if transport == "rest" else 8500)
    try:
        with client_type(host, port, timeout=timeout) as client:
            outputs = client.predict(model, rows, version=model_version, label=label,
                                     signature_name=signature_name)
    except ServingError as error:
        raise click.ClickException(f"{error.code.name}: {error.message}") from None
    click.echo(json.dumps({k: v.tolist() for k, v in sorted(outputs.items())}, default=_text))


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@click.command("serve-demo")
@click.option("--model_base_path", required=True, help="Folder of integer version folders.")
@click.option("--model_name", default="taxi", show_default=True)
@click.option("--json", "json_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Feature rows to predict on.")
def serve_demo(model_base_path, model_name, json_path) -> None:
    """Start a server on free ports, predict over REST and gRPC, print, and stop."""
    _configure_logging()
    from skewless.serving import demo
    from skewless.serving.errors import ServingError

    try:
        demo.run(model_base_path, demo.load_rows(json_path), model_name, echo=click.echo)
    except (ConfigError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    except ServingError as error:
        raise click.ClickException(f"{error.code.name}: {error.message}") from None


COMMANDS = [serve, predict, serve_demo]
