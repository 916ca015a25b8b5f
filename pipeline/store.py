"""The one reader of ML Metadata: the store a config names, and what TFX records in it.

Property names are TFX's own (the Evaluator's `blessed`, the Pusher's `pushed`,
`pushed_version`, `pushed_destination`); results, the registry, the report and the notebooks
read artifacts through these functions, never through the strings.
"""

from __future__ import annotations

import hashlib
import os

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.components.evaluator import constants as evaluator_constants

from skewless.components.serving_model.executor import (
    PUSHED,
    PUSHED_DESTINATION,
    PUSHED_VERSION,
)
from skewless.pipeline.config import ConfigError
from skewless.pipeline.run_config import PipelineConfig

Artifact = metadata_store_pb2.Artifact
Execution = metadata_store_pb2.Execution

BLESSED = evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY

# Execution states as the CLI, the report and the notebooks name them.
STATE_NAMES = {
    Execution.COMPLETE: "executed",
    Execution.CACHED: "cached",
    Execution.FAILED: "failed",
    Execution.RUNNING: "running",
    Execution.NEW: "new",
    Execution.CANCELED: "canceled",
}
# InteractiveContext's legacy `state` property.
LEGACY_STATE_NAMES = {"complete": "executed", "cached": "cached", "new": "running"}


def connection_config(config: PipelineConfig, readonly: bool = True
                      ) -> metadata_store_pb2.ConnectionConfig:
    """The MLMD connection the config names; a MySQL password comes from the environment
    variable `metadata.mysql.password_env` names."""
    connection = metadata_store_pb2.ConnectionConfig()
    if config.metadata.sqlite is not None:
        connection.sqlite.filename_uri = str(config.metadata.sqlite)
        connection.sqlite.connection_mode = (
            metadata_store_pb2.SqliteMetadataSourceConfig.READONLY if readonly
            else metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE)
    else:
        m = config.metadata.mysql
        connection.mysql.host, connection.mysql.port = m.host, m.port
        connection.mysql.database, connection.mysql.user = m.database, m.user
        connection.mysql.password = mysql_password(config)
    return connection


def mysql_password(config: PipelineConfig) -> str:
    """The MySQL password, from the environment variable `metadata.mysql.password_env` names
    ("" when it names none).

    Raises:
        ConfigError: the variable is not set.
    """
    name = config.metadata.mysql.password_env
    if name is None:
        return ""
    if name not in os.environ:
        raise ConfigError(f"{config.source}: metadata.mysql.password_env: the environment "
                          f"variable {name} is not set")
    return os.environ[name]


def connect(config: PipelineConfig, readonly: bool = True) -> metadata_store.MetadataStore:
    """The MLMD store the config names (read-only on SQLite unless `readonly=False`).

    Raises:
        ConfigError: the MySQL server does not take the connection (MLMD's own error is a bare
            RuntimeError, often with an empty message).
    """
    connection = connection_config(config, readonly)
    try:
        return metadata_store.MetadataStore(connection)
    except RuntimeError as error:
        if config.metadata.mysql is None:
            raise
        m = config.metadata.mysql
        # MLMD's text is "mysql_real_connect failed: errno: N, error: WHY", WHY often empty.
        why = str(error).rpartition("error: ")[2].strip() or (
            "is the server running there, and is the password "
            + (f"in ${m.password_env} right?" if m.password_env else "(none) right?"))
        raise ConfigError(f"{config.source}: metadata.mysql: cannot connect to database "
                          f"{m.database!r} as {m.user!r} on {m.host}:{m.port}: {why}") from None


def state_name(execution: Execution) -> str:
    """An execution's state as shown to people, as either runner records it."""
    if "state" in execution.properties:  # InteractiveContext
        legacy = execution.properties["state"].string_value
        return LEGACY_STATE_NAMES.get(legacy, legacy)
    return STATE_NAMES.get(execution.last_known_state, "unknown")


def is_blessed(blessing: Artifact) -> bool | None:
    """The Evaluator's verdict on a ModelBlessing, None when it has none."""
    props = blessing.custom_properties
    return bool(props[BLESSED].int_value) if BLESSED in props else None


def is_pushed(pushed: Artifact) -> bool:
    """Whether a PushedModel artifact records a push."""
    props = pushed.custom_properties
    return PUSHED in props and bool(props[PUSHED].int_value)


def pushed_version(pushed: Artifact) -> int | None:
    """The integer version a PushedModel was pushed as; None if it was not pushed."""
    if not is_pushed(pushed):
        return None
    value = pushed.custom_properties[PUSHED_VERSION]  # TFX's Pusher: a string; ServingModel: int
    return int(getattr(value, value.WhichOneof("value")))


def pushed_destination(pushed: Artifact) -> str | None:
    """The version folder a PushedModel was pushed to; None if it was not pushed."""
    if not is_pushed(pushed):
        return None
    return pushed.custom_properties[PUSHED_DESTINATION].string_value


def newest_execution(
    store: metadata_store.MetadataStore, pipeline_name: str, node_id: str
) -> Execution | None:
    """A node's newest finished execution (executed or cached)."""
    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node_id}")
    if context is None:
        return None
    done = (Execution.COMPLETE, Execution.CACHED)
    executions = [e for e in store.get_executions_by_context(context.id)
                  if e.last_known_state in done]
    return max(executions, key=lambda e: e.id, default=None)


def latest_output(
    store: metadata_store.MetadataStore, pipeline_name: str, node_id: str, type_name: str,
    event: int = metadata_store_pb2.Event.OUTPUT,
) -> Artifact | None:
    """The artifact of a type that a node's newest finished execution output (cached or not),
    or took as input with `event=Event.INPUT`."""
    newest = newest_execution(store, pipeline_name, node_id)
    if newest is None:
        return None
    ids = [e.artifact_id for e in store.get_events_by_execution_ids([newest.id])
           if e.type == event]
    artifacts = [a for a in store.get_artifacts_by_id(ids) if a.type == type_name]
    return max(artifacts, key=lambda a: a.id, default=None)


# Each `skewless run` is a `pipeline_run` context named by its run id (TFX's LocalDagRunner);
# the runner adds the config the run was given as two custom properties of that context.
RUN_CONTEXT_TYPE = "pipeline_run"
CONFIG_SHA256 = "skewless_config_sha256"
CONFIG_TEXT = "skewless_config_text"


def record_run_config(store: metadata_store.MetadataStore, run_id: str, text: str) -> None:
    """Records a config's text and its SHA-256 on the run's context (a no-op when the run
    recorded nothing, e.g. it failed before its first component)."""
    context = store.get_context_by_type_and_name(RUN_CONTEXT_TYPE, run_id)
    if context is None:
        return
    context.custom_properties[CONFIG_SHA256].string_value = hashlib.sha256(
        text.encode()).hexdigest()
    context.custom_properties[CONFIG_TEXT].string_value = text
    store.put_contexts([context])


def run_config_of(store: metadata_store.MetadataStore, execution_id: int
                  ) -> tuple[str, str, str] | None:
    """The run an execution belongs to, as (run id, config SHA-256, config text)."""
    for context in store.get_contexts_by_execution(execution_id):
        props = context.custom_properties
        if context.type == RUN_CONTEXT_TYPE and CONFIG_SHA256 in props:
            return context.name, props[CONFIG_SHA256].string_value, props[CONFIG_TEXT].string_value
    return None
