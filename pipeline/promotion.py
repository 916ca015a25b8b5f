"""Version labels over the registry: promote a pushed version to a label, roll a label back.

Every move is an MLMD execution (`ModelPromotion`: version, label, previous version, user; its
time is the execution's), so the labels are the registry's and the history says who moved what.
The model config file `skewless serve` and `tensorflow_model_server` poll
(`--model_config_file`, `--model_config_file_poll_wait_seconds`) is then rewritten atomically with
the labels, and with every labelled version (and each label's rollback target) kept loaded:
TF Serving assigns a label only to a version that is already available (`ServerCore::
UpdateModelVersionLabelMap` runs before the new versions load). Moving a label to a version no
server has loaded therefore takes two writes: the first loads it, and once a server answers
that it is AVAILABLE the second moves the label.
"""

from __future__ import annotations

import dataclasses
import datetime
import getpass
import re
import time
from pathlib import Path

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from skewless.pipeline.manifests import MODELS_FILE, RegistryLabels, write_local_serving_files
from skewless.pipeline.registry import Registry
from skewless.pipeline.run_config import PipelineConfig
from skewless.pipeline.store import connect

# TF Serving's documented label form (model_server_config.proto's `version_labels`).
LABEL_PATTERN = re.compile(r"[a-zA-Z0-9_]+")
PROMOTION_TYPE = "ModelPromotion"
PROMOTE, ROLLBACK = "promote", "rollback"
_PROPERTIES = {
    "label": metadata_store_pb2.STRING,
    "version": metadata_store_pb2.INT,
    "previous_version": metadata_store_pb2.INT,  # 0: the label pointed nowhere before
    "action": metadata_store_pb2.STRING,
    "user": metadata_store_pb2.STRING,
}


class PromotionError(ValueError):
    """A promotion or rollback was refused; the message is the one line the CLI prints."""


@dataclasses.dataclass(frozen=True)
class Promotion:
    """One recorded label move."""

    label: str
    version: int
    previous_version: int | None
    action: str
    user: str
    time: datetime.datetime


def check_label(label: str) -> str:
    """The label, if TF Serving accepts it."""
    if not LABEL_PATTERN.fullmatch(label):
        raise PromotionError(f"invalid label {label!r}: a TF Serving version label matches "
                             f"{LABEL_PATTERN.pattern}")
    return label


def history(store: metadata_store.MetadataStore, pipeline_name: str) -> list[Promotion]:
    """Every label move recorded for the pipeline, oldest first."""
    context = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if context is None:
        return []
    moves = []
    for execution in sorted(store.get_executions_by_context(context.id), key=lambda e: e.id):
        if execution.type != PROMOTION_TYPE:
            continue
        props = execution.properties
        previous = props["previous_version"].int_value
        moves.append(Promotion(
            label=props["label"].string_value, version=props["version"].int_value,
            previous_version=previous or None, action=props["action"].string_value,
            user=props["user"].string_value,
            time=datetime.datetime.fromtimestamp(execution.create_time_since_epoch / 1000)))
    return moves


def label_stacks(moves: list[Promotion]) -> dict[str, list[int]]:
    """Each label's versions, oldest first: a promotion pushes one, a rollback pops one."""
    stacks: dict[str, list[int]] = {}
    for move in moves:
        stack = stacks.setdefault(move.label, [])
        if move.action == ROLLBACK:
            stack.pop()
        else:
            stack.append(move.version)
    return {label: stack for label, stack in stacks.items() if stack}


def registry_labels(store: metadata_store.MetadataStore, pipeline_name: str,
                    newest_pushed: int | None) -> RegistryLabels:
    """The labels as the registry has them, and the versions a server must keep loaded: the
    labelled ones, each label's rollback target, and the newest pushed (the next candidate)."""
    return _labels_of(history(store, pipeline_name), newest_pushed)


def _labels_of(moves: list[Promotion], newest_pushed: int | None) -> RegistryLabels:
    stacks = label_stacks(moves)
    loaded = {v for stack in stacks.values() for v in stack[-2:]}
    if newest_pushed is not None:
        loaded.add(newest_pushed)
    return RegistryLabels({label: stack[-1] for label, stack in sorted(stacks.items())},
                          tuple(sorted(loaded)))


def served(config: PipelineConfig) -> RegistryLabels | None:
    """The registry's labels for the config's model; None before any store or label exists."""
    if config.metadata.sqlite is not None and not config.metadata.sqlite.is_file():
        return None
    store = connect(config)
    pushed = Registry(store, config.pipeline.name).pushed_models()
    newest = int(pushed["pushed_version"].iloc[0]) if not pushed.empty else None
    labels = registry_labels(store, config.pipeline.name, newest)
    return labels if labels.labels else None


def _record(store: metadata_store.MetadataStore, pipeline_name: str, move: Promotion) -> None:
    execution_type = metadata_store_pb2.ExecutionType(name=PROMOTION_TYPE)
    for name, kind in _PROPERTIES.items():
        execution_type.properties[name] = kind
    type_id = store.put_execution_type(execution_type, can_add_fields=True)
    execution = metadata_store_pb2.Execution(
        type_id=type_id, last_known_state=metadata_store_pb2.Execution.COMPLETE)
    execution.properties["label"].string_value = move.label
    execution.properties["version"].int_value = move.version
    execution.properties["previous_version"].int_value = move.previous_version or 0
    execution.properties["action"].string_value = move.action
    execution.properties["user"].string_value = move.user
    context = store.get_context_by_type_and_name("pipeline", pipeline_name)
    store.put_execution(execution, [], [context])


def model_config_path(config: PipelineConfig) -> Path:
    """The model config file a local server polls: `<serving.push_dir>/models.config`."""
    return config.serving.push_dir / MODELS_FILE


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def promote(config: PipelineConfig, version: int, label: str, force: bool = False,
            server: str | None = None, timeout: float = 300.0) -> Promotion:
    """Points a label at a pushed version, rewrites the model config file and records the move.

    Args:
        server: `HOST:PORT` of a server's REST API that polls the model config file; needed
            when the label exists and the version is not loaded, to wait for it to load.
        timeout: seconds to wait for the version to become AVAILABLE there.

    Raises:
        PromotionError: a bad label, or a version that was not pushed, is not blessed (unless
            `force`), is not on disk, or must load first and did not (or no server was given).
    """
    check_label(label)
    store = connect(config, readonly=False)
    registry = Registry(store, config.pipeline.name)
    pushed = registry.pushed_models()
    row = pushed[pushed["pushed_version"] == version]
    if row.empty:
        known = ", ".join(str(v) for v in pushed["pushed_version"]) if not pushed.empty else "none"
        raise PromotionError(f"version {version} of model {config.serving.model_name} was never "
                             f"pushed (pushed versions: {known})")
    if not row["blessed"].iloc[0] and not force:
        raise PromotionError(f"version {version} is not blessed: its newest evaluation did not "
                             "meet the thresholds; pass --force to promote it anyway")
    folder = config.model_push_dir / str(version)
    if not folder.is_dir():
        raise PromotionError(f"version {version} is not on disk: {folder} does not exist")
    newest = int(pushed["pushed_version"].iloc[0])
    current = registry_labels(store, config.pipeline.name, newest).labels
    move = Promotion(label, version, current.get(label), PROMOTE, _user(),
                     datetime.datetime.now())
    return _apply(config, store, move, newest, server, timeout)


def rollback(config: PipelineConfig, label: str) -> Promotion:
    """Points a label back at the version it pointed at before, and records the move.

    Raises:
        PromotionError: a bad label, or a label with no earlier version.
    """
    check_label(label)
    store = connect(config, readonly=False)
    stack = label_stacks(history(store, config.pipeline.name)).get(label, [])
    if len(stack) < 2:
        where = f"points only at version {stack[0]}" if stack else "was never promoted"
        raise PromotionError(f"label {label} {where}: there is no earlier version to roll back to")
    target = stack[-2]
    if not (config.model_push_dir / str(target)).is_dir():
        raise PromotionError(f"version {target} is not on disk: "
                             f"{config.model_push_dir / str(target)} does not exist")
    pushed = Registry(store, config.pipeline.name).pushed_models()
    move = Promotion(label, target, stack[-1], ROLLBACK, _user(), datetime.datetime.now())
    return _apply(config, store, move, int(pushed["pushed_version"].iloc[0]))


def _apply(config: PipelineConfig, store: metadata_store.MetadataStore, move: Promotion,
           newest: int, server: str | None = None, timeout: float = 300.0) -> Promotion:
    moves = history(store, config.pipeline.name)
    before = _labels_of(moves, newest)
    if move.label in before.labels and move.version not in before.loaded:
        _load_first(config, before, move.version, server, timeout)
    write_local_serving_files(config, registry=_labels_of([*moves, move], newest))
    _record(store, config.pipeline.name, move)
    return move


def _load_first(config: PipelineConfig, before: RegistryLabels, version: int,
                server: str | None, timeout: float) -> None:
    """Writes the model config with `version` loaded and the labels unchanged, and waits until
    `server` has it AVAILABLE; on failure the file is put back as it was."""
    from skewless.serving.client import RestClient
    from skewless.serving.errors import ServingError

    path, name = model_config_path(config), config.serving.model_name
    if server is None:
        loaded = ", ".join(str(v) for v in before.loaded)
        raise PromotionError(
            f"version {version} is not loaded ({path} loads {loaded}) and TF Serving moves a "
            f"label only to a loaded version: pass --server HOST:PORT, the REST address of a "
            f"server polling that file, to load it first and wait for it")
    host, _, port = server.rpartition(":")
    if not host or not port.isdigit():
        raise PromotionError(f"--server {server!r} is not HOST:PORT")
    client = RestClient(host, int(port), timeout=10.0, retries=0)
    try:
        client.status(name)
    except ServingError as error:
        raise PromotionError(f"cannot ask {server} about model {name}: {error.message}") from None
    write_local_serving_files(config, registry=RegistryLabels(
        before.labels, tuple(sorted({*before.loaded, version}))))
    try:
        _wait_available(client, name, version, timeout, server)
    except PromotionError:
        write_local_serving_files(config, registry=before)
        raise
    finally:
        client.close()


def _wait_available(client, name: str, version: int, timeout: float, server: str) -> None:
    from skewless.serving.errors import ServingError

    deadline = time.monotonic() + timeout
    while True:
        try:
            [status] = client.status(name, version=version)
        except ServingError:
            status = None  # not known to the server yet
        if status and status["state"] == "AVAILABLE":
            return
        if status and status["state"] == "END":
            raise PromotionError(f"version {version} did not load on {server}: "
                                 f"{status['status'].get('error_message', 'no reason given')}")
        if time.monotonic() > deadline:
            raise PromotionError(f"version {version} was not AVAILABLE on {server} within "
                                 f"{timeout:g} s; the model config file is back as it was")
        time.sleep(0.25)
