"""Server configuration: TF Serving's text-format config files as typed, immutable objects.

``--model_config_file`` holds a ``ModelServerConfig`` (tensorflow_serving.config), and
``--batching_parameters_file`` / ``--monitoring_config_file`` hold ``BatchingParameters`` /
``MonitoringConfig`` (vendored protos, see ``session_bundle_config.proto`` and
``monitoring_config.proto``). Each file is parsed with the real protobuf message, then checked
and turned into a frozen dataclass; a malformed file raises :class:`ConfigError` naming the
file and line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, TypeVar

from google.protobuf import message as pb_message
from google.protobuf import text_format
from tensorflow_serving.config import logging_config_pb2, model_server_config_pb2

from skewless.serving import monitoring_config_pb2, session_bundle_config_pb2

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"

_Message = TypeVar("_Message", bound=pb_message.Message)


class ConfigError(ValueError):
    """A configuration file or flag is invalid; the message names the file, line and problem."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions found under a model's base path are served.

    Attributes:
        kind: ``latest`` (the highest ``num_versions``), ``all`` or ``specific``.
        num_versions: For ``latest``: how many of the highest versions to serve.
        versions: For ``specific``: the versions to serve.
    """

    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()


COLLECTOR_TYPE = "tfrecord"  # the request log collector `skewless serve` has


class LoggingConfigError(ConfigError):
    """A model's ``logging_config`` cannot be used; the message names what is wrong."""


@dataclass(frozen=True)
class LoggingSpec:
    """One model's request logging, from its ``logging_config``.

    Attributes:
        filename_prefix: Path prefix of the log files (its folder is created).
        sampling_rate: Share of requests logged, in [0, 1].
        sampling_config: The serialized ``SamplingConfig``, copied into each record's metadata.
    """

    filename_prefix: str
    sampling_rate: float
    sampling_config: bytes = b""


def logging_spec(proto: logging_config_pb2.LoggingConfig, where: str) -> LoggingSpec:
    """Checks a ``logging_config`` entry.

    Raises:
        LoggingConfigError: Another collector type, no ``filename_prefix``, or a sampling rate
            outside [0, 1].
    """
    collector = proto.log_collector_config
    if collector.type != COLLECTOR_TYPE:
        # TF Serving's own words (core/log_collector.cc), and what skewless has instead.
        raise LoggingConfigError(
            f"{where}: Cannot find LogCollector::Factory for type: {collector.type!r} "
            f"(skewless serve writes type {COLLECTOR_TYPE!r})"
        )
    if not collector.filename_prefix:
        raise LoggingConfigError(
            f"{where}: logging_config.log_collector_config.filename_prefix is required"
        )
    rate = proto.sampling_config.sampling_rate
    if not 0.0 <= rate <= 1.0:
        raise LoggingConfigError(
            f"{where}: logging_config.sampling_config.sampling_rate must be between 0 and 1, "
            f"got {rate:g}"
        )
    return LoggingSpec(
        filename_prefix=os.path.abspath(collector.filename_prefix),
        sampling_rate=rate,
        sampling_config=proto.sampling_config.SerializeToString(deterministic=True),
    )


@dataclass(frozen=True)
class ModelConfig:
    """One served model, as in a ``ModelConfig`` entry of a ``ModelServerConfig``.

    Attributes:
        name: The model name clients address.
        base_path: Absolute folder holding one sub-folder per integer version.
        version_policy: Which versions to serve.
        version_labels: Label to version, e.g. ``{"stable": 1, "canary": 2}``.
        logging: Request logging (``logging_config``), or None.
    """

    name: str
    base_path: str
    version_policy: VersionPolicy = VersionPolicy()
    version_labels: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    logging: LoggingSpec | None = None


@dataclass(frozen=True)
class BatchingConfig:
    """Batching parameters, with TF Serving's defaults for fields the file leaves out.

    Attributes:
        max_batch_size: The largest batch formed from queued requests.
        batch_timeout_micros: How long an incomplete batch waits for more requests once a batch
            thread is free (0: process as soon as a thread is free).
        max_enqueued_batches: Batches that may wait, the open one included; beyond it requests
            are rejected with UNAVAILABLE.
        num_batch_threads: Threads that run batches on the model.
        thread_pool_name: Label of the batch thread pool in metrics.
        allowed_batch_sizes: Batches are padded up to the next of these sizes.
        pad_variable_length_inputs: Accepted for compatibility; inputs of different trailing
            shapes are never merged into one batch, so no padding is needed.
        enable_large_batch_splitting: Split a request larger than an execution batch across
            batches instead of rejecting it.
        max_execution_batch_size: The largest batch run on the model when splitting.
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    thread_pool_name: str = "batch_threads"
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = True
    max_execution_batch_size: int = 0

    @property
    def execution_batch_size(self) -> int:
        """The largest batch actually run on the model."""
        return self.max_execution_batch_size or self.max_batch_size


@dataclass(frozen=True)
class MonitoringConfig:
    """Whether and where Prometheus metrics are exposed on the REST port."""

    prometheus_enabled: bool = False
    prometheus_path: str = DEFAULT_PROMETHEUS_PATH


def parse_text_proto(text: str, message_type: type[_Message], source: str) -> _Message:
    """Parses a protobuf text-format document.

    Args:
        text: The document.
        message_type: The protobuf message class it holds.
        source: The file name, for error messages.

    Returns:
        The parsed message.

    Raises:
        ConfigError: The text is not a valid ``message_type``; names the line and column.
    """
    try:
        return text_format.Parse(text, message_type())
    except text_format.ParseError as error:
        line, column = error.GetLine(), error.GetColumn()
        where = f"{source}:{line}:{column}" if line else source
        detail = str(error)
        prefix = f"{line}:{column} : "
        if detail.startswith(prefix):
            detail = detail[len(prefix):]
        raise ConfigError(
            f"{where}: not a valid {message_type.DESCRIPTOR.name}: {detail}"
        ) from None


def _read(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as error:
        raise ConfigError(f"Cannot read {what} {path}: {error.strerror}") from None


def single_model_config(name: str, base_path: str) -> tuple[ModelConfig, ...]:
    """The config of ``--model_name/--model_base_path``: one model, latest version.

    Raises:
        ConfigError: The name or base path is empty.
    """
    if not name:
        raise ConfigError("--model_name must not be empty")
    if not base_path:
        raise ConfigError("--model_base_path is required when --model_config_file is not given")
    return (ModelConfig(name=name, base_path=os.path.abspath(base_path)),)


def model_configs_from_proto(
    config: model_server_config_pb2.ModelServerConfig, source: str = "ModelServerConfig"
) -> tuple[ModelConfig, ...]:
    """Checks a ``ModelServerConfig`` and converts its model list.

    Args:
        config: The parsed config.
        source: Where it came from, for error messages.

    Returns:
        One :class:`ModelConfig` per model, in file order.

    Raises:
        ConfigError: No ``model_config_list``, a missing/duplicate name or base path, a platform
            other than tensorflow, or an invalid version policy or label.
    """
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{source}: only model_config_list is supported")
    models: list[ModelConfig] = []
    seen: set[str] = set()
    for index, entry in enumerate(config.model_config_list.config):
        where = f"{source}: model #{index + 1}"
        if not entry.name:
            raise ConfigError(f"{where}: name is required")
        where = f"{source}: model {entry.name!r}"
        if entry.name in seen:
            raise ConfigError(f"{where}: the name is used twice")
        seen.add(entry.name)
        if not entry.base_path:
            raise ConfigError(f"{where}: base_path is required")
        if entry.model_platform not in ("", "tensorflow"):
            raise ConfigError(
                f"{where}: model_platform {entry.model_platform!r} is not supported "
                "(only tensorflow)"
            )
        models.append(
            ModelConfig(
                name=entry.name,
                base_path=os.path.abspath(entry.base_path),
                version_policy=_version_policy(entry.model_version_policy, where),
                version_labels=MappingProxyType(_version_labels(entry.version_labels, where)),
                logging=_logging(entry, where),
            )
        )
    if not models:
        raise ConfigError(f"{source}: model_config_list has no models")
    return tuple(models)


def _logging(entry, where: str) -> LoggingSpec | None:
    if not entry.HasField("logging_config"):
        return None
    return logging_spec(entry.logging_config, where)


def _version_policy(policy, where: str) -> VersionPolicy:
    kind = policy.WhichOneof("policy_choice")
    if kind is None or kind == "latest":
        num = policy.latest.num_versions if kind == "latest" else 1
        if kind == "latest" and num < 1:
            num = 1  # TF Serving treats an unset num_versions as 1.
        return VersionPolicy("latest", num_versions=num)
    if kind == "all":
        return VersionPolicy("all")
    versions = tuple(sorted(set(policy.specific.versions)))
    if not versions:
        raise ConfigError(f"{where}: model_version_policy specific lists no versions")
    if any(v < 0 for v in versions):
        raise ConfigError(f"{where}: versions must be non-negative integers")
    return VersionPolicy("specific", versions=versions)


def _version_labels(labels: Mapping[str, int], where: str) -> dict[str, int]:
    for label in labels:
        if not label or any(c in label for c in "/:\\") or label in (".", ".."):
            raise ConfigError(f"{where}: invalid version label {label!r}")
    return dict(labels)


def load_model_config_file(path: str) -> tuple[ModelConfig, ...]:
    """Reads ``--model_config_file`` (a ``ModelServerConfig`` in text format).

    Raises:
        ConfigError: The file cannot be read or is invalid; the message names the line.
    """
    text = _read(path, "model config file")
    proto = parse_text_proto(text, model_server_config_pb2.ModelServerConfig, path)
    return model_configs_from_proto(proto, path)


def check_base_paths(models: tuple[ModelConfig, ...]) -> None:
    """Fails fast on a base path that does not exist.

    Raises:
        ConfigError: Names the model and the missing path.
    """
    for model in models:
        if not os.path.isdir(model.base_path):
            raise ConfigError(
                f"Model base path {model.base_path} of model {model.name!r} does not exist "
                "or is not a directory"
            )


def batching_config_from_proto(
    params: session_bundle_config_pb2.BatchingParameters, source: str = "BatchingParameters"
) -> BatchingConfig:
    """Applies TF Serving's defaults to ``BatchingParameters`` and checks them.

    Raises:
        ConfigError: A non-positive size or thread count, or allowed_batch_sizes not increasing
            or not ending at the execution batch size.
    """
    defaults = BatchingConfig()

    def value(name: str, default):
        return getattr(params, name).value if params.HasField(name) else default

    config = BatchingConfig(
        max_batch_size=value("max_batch_size", defaults.max_batch_size),
        batch_timeout_micros=value("batch_timeout_micros", defaults.batch_timeout_micros),
        max_enqueued_batches=value("max_enqueued_batches", defaults.max_enqueued_batches),
        num_batch_threads=value("num_batch_threads", defaults.num_batch_threads),
        thread_pool_name=value("thread_pool_name", defaults.thread_pool_name),
        allowed_batch_sizes=tuple(params.allowed_batch_sizes),
        pad_variable_length_inputs=params.pad_variable_length_inputs,
        enable_large_batch_splitting=value(
            "enable_large_batch_splitting", defaults.enable_large_batch_splitting
        ),
        max_execution_batch_size=value("max_execution_batch_size", 0),
    )
    for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{source}: {name} must be positive, got {getattr(config, name)}")
    if config.batch_timeout_micros < 0:
        raise ConfigError(f"{source}: batch_timeout_micros must not be negative")
    if config.max_execution_batch_size < 0:
        raise ConfigError(f"{source}: max_execution_batch_size must not be negative")
    sizes = config.allowed_batch_sizes
    if sizes:
        if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)) or sizes[0] < 1:
            raise ConfigError(
                f"{source}: allowed_batch_sizes entries must be positive and monotonically "
                "increasing"
            )
        if sizes[-1] != config.execution_batch_size:
            raise ConfigError(
                f"{source}: the final entry in allowed_batch_sizes ({sizes[-1]}) must equal "
                f"max_batch_size ({config.execution_batch_size})"
            )
    return config


def load_batching_parameters_file(path: str) -> BatchingConfig:
    """Reads ``--batching_parameters_file`` (``BatchingParameters`` in text format).

    Raises:
        ConfigError: The file cannot be read or is invalid; the message names the line.
    """
    text = _read(path, "batching parameters file")
    proto = parse_text_proto(text, session_bundle_config_pb2.BatchingParameters, path)
    return batching_config_from_proto(proto, path)


def load_monitoring_config_file(path: str) -> MonitoringConfig:
    """Reads ``--monitoring_config_file`` (``MonitoringConfig`` in text format).

    Raises:
        ConfigError: The file cannot be read or is invalid, or the path does not start with /.
    """
    text = _read(path, "monitoring config file")
    proto = parse_text_proto(text, monitoring_config_pb2.MonitoringConfig, path)
    prometheus = proto.prometheus_config
    metrics_path = prometheus.path or DEFAULT_PROMETHEUS_PATH
    if not metrics_path.startswith("/"):
        raise ConfigError(f"{path}: prometheus_config.path must start with '/'")
    return MonitoringConfig(prometheus_enabled=prometheus.enable, prometheus_path=metrics_path)
