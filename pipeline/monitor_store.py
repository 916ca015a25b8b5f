"""What `skewless monitor` reads from and writes to ML Metadata, in one place.

Reads: the served version (the newest pushed, or a given one) and, through its lineage
(`registry.Registry`), the model, its schema, its raw examples and their training statistics;
the input fingerprint of the newest ExampleGen run. Writes: one monitor execution linked to the
served model, with the serving statistics and anomalies as TFX artifacts and the triggers that
fired, and why.
"""

from __future__ import annotations

import dataclasses
import json
import os

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.types import artifact_utils, standard_artifacts

from skewless.pipeline.build import EXAMPLE_GEN, STATISTICS_GEN, TRAINER, local_metadata
from skewless.pipeline.registry import Registry
from skewless.pipeline.report import run_ids
from skewless.pipeline.run_config import PipelineConfig
from skewless.pipeline.store import (
    connect,
    is_pushed,
    newest_execution,
    pushed_destination,
    pushed_version,
)

MONITOR_EXECUTION_TYPE = "skewless.Monitor"
FINGERPRINT_PROPERTY = "input_fingerprint"  # ExampleGen's (tfx.components.example_gen.utils)
SERVED_MODEL_KEY = "served_model"
TRIGGERS_PROPERTY = "triggers"
RETRAIN_RUN_PROPERTY = "retrain_run"
Event = metadata_store_pb2.Event


class ServedModelNotFound(LookupError):
    """No pushed version (or not the one asked for) in MLMD; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """A pushed version and what it was trained from."""

    version: int
    path: str  # the version's folder under the push directory
    pushed_model_id: int
    schema_uri: str
    examples_uri: str  # ExampleGen's output: the raw train and eval splits
    statistics_uri: str  # StatisticsGen's statistics of those examples


def _the(artifacts: dict, type_name: str, registry: Registry, node_id: str):
    found = [a for a in artifacts.values() if a.type == type_name
             and registry.node_id(registry.producer(a.id) or -1) == node_id]
    return max(found, key=lambda a: a.id, default=None)


def served_model(config: PipelineConfig, version: int | None = None) -> ServedModel:
    """The served version (default: the newest pushed) and its training artifacts.

    Raises:
        ServedModelNotFound: nothing pushed yet, or no such version.
    """
    if config.metadata.sqlite is not None and not config.metadata.sqlite.is_file():
        raise ServedModelNotFound(f"no MLMD store at {config.metadata.sqlite}: run `skewless run "
                                  "--config ...` first")
    registry = Registry(connect(config), config.pipeline.name)
    pushed = [a for a in registry.artifacts_of_type("PushedModel") if is_pushed(a)]
    if version is not None:
        pushed = [a for a in pushed if pushed_version(a) == version]
    if not pushed:
        which = f"version {version} of " if version is not None else ""
        raise ServedModelNotFound(f"no pushed {which}model {config.serving.model_name!r} in "
                                  f"pipeline {config.pipeline.name!r}'s MLMD store")
    artifact = max(pushed, key=lambda a: (pushed_version(a), a.id))
    upstream = registry.lineage(artifact.id).artifacts
    schema = max((a for a in upstream.values() if a.type == "Schema"), key=lambda a: a.id)
    examples = _the(upstream, "Examples", registry, EXAMPLE_GEN)
    if _the(upstream, "Model", registry, TRAINER) is None or examples is None:
        raise ServedModelNotFound(f"the lineage of pushed model #{artifact.id} has no Trainer "
                                  "model or ExampleGen examples")
    statistics = [a for execution in registry.consumers(examples.id, "examples")
                  if registry.node_id(execution) == STATISTICS_GEN
                  for a in registry.outputs(execution, "ExampleStatistics")]
    if not statistics:
        raise ServedModelNotFound(f"no StatisticsGen statistics of examples #{examples.id}")
    path = pushed_destination(artifact) or ""
    if not os.path.isdir(path):
        raise ServedModelNotFound(f"pushed version {path} is gone from the push folder")
    return ServedModel(
        version=pushed_version(artifact),
        path=path,
        pushed_model_id=artifact.id,
        schema_uri=schema.uri,
        examples_uri=examples.uri,
        statistics_uri=statistics[-1].uri,
    )


def last_input_fingerprint(config: PipelineConfig) -> tuple[str, int] | None:
    """The input fingerprint the newest ExampleGen run recorded, and when it ran (ms)."""
    store = connect(config)
    execution = newest_execution(store, config.pipeline.name, EXAMPLE_GEN)
    if execution is None:
        return None
    ids = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
           if e.type == Event.OUTPUT]
    for artifact in store.get_artifacts_by_id(ids):
        if FINGERPRINT_PROPERTY in artifact.custom_properties:
            return (artifact.custom_properties[FINGERPRINT_PROPERTY].string_value,
                    execution.create_time_since_epoch)
    return None


def _output(store, artifact, uri: str, split: str, properties: dict[str, str]):
    artifact.uri = uri
    artifact.split_names = artifact_utils.encode_split_names([split])
    for name, value in properties.items():
        artifact.set_string_custom_property(name, value)
    proto = artifact.mlmd_artifact
    proto.type_id = store.put_artifact_type(artifact.artifact_type)
    proto.state = metadata_store_pb2.Artifact.LIVE
    return proto


def _event(kind: int, key: str) -> metadata_store_pb2.Event:
    event = Event(type=kind)
    event.path.steps.add().key = key
    return event


def record_monitor_run(
    config: PipelineConfig, served: ServedModel, *, statistics_uri: str, anomalies_uri: str,
    split: str, summary: dict, triggers: list[dict],
) -> int:
    """Records a monitor run: an execution taking the served model, its schema and training
    statistics, and outputting the serving statistics and anomalies; returns its id."""
    store = metadata_store.MetadataStore(local_metadata(config))
    type_id = store.put_execution_type(metadata_store_pb2.ExecutionType(
        name=MONITOR_EXECUTION_TYPE))
    execution = metadata_store_pb2.Execution(
        type_id=type_id, last_known_state=metadata_store_pb2.Execution.COMPLETE)
    execution.custom_properties["model_name"].string_value = config.serving.model_name
    execution.custom_properties["served_version"].int_value = served.version
    execution.custom_properties["summary"].string_value = json.dumps(summary, sort_keys=True)
    execution.custom_properties[TRIGGERS_PROPERTY].string_value = json.dumps(triggers)
    properties = {"model_name": config.serving.model_name, "served_version": str(served.version)}
    statistics = _output(store, standard_artifacts.ExampleStatistics(), statistics_uri, split,
                         properties)
    anomalies = _output(store, standard_artifacts.ExampleAnomalies(), anomalies_uri, split,
                        properties)
    pushed, *_ = store.get_artifacts_by_id([served.pushed_model_id])
    training = [a for a in store.get_artifacts_by_uri(served.statistics_uri)
                if a.type_id == statistics.type_id]
    inputs = [(pushed, _event(Event.INPUT, SERVED_MODEL_KEY))]
    inputs += [(a, _event(Event.INPUT, "training_statistics")) for a in training[:1]]
    outputs = [(statistics, _event(Event.OUTPUT, "statistics")),
               (anomalies, _event(Event.OUTPUT, "anomalies"))]
    context = store.get_context_by_type_and_name("pipeline", config.pipeline.name)
    execution_id, _, _ = store.put_execution(execution, inputs + outputs,
                                             [context] if context else [])
    return execution_id


def record_retrain_run(config: PipelineConfig, execution_id: int) -> str:
    """Adds the newest pipeline run, the one a monitor run's triggers started, to its execution;
    returns the run's id."""
    store = metadata_store.MetadataStore(local_metadata(config))
    run_id = run_ids(store, config.pipeline.name)[-1]
    [execution] = store.get_executions_by_id([execution_id])
    execution.custom_properties[RETRAIN_RUN_PROPERTY].string_value = run_id
    store.put_executions([execution])
    return run_id


def monitor_runs(config: PipelineConfig) -> list[metadata_store_pb2.Execution]:
    """The recorded monitor runs of the config's pipeline, oldest first."""
    return sorted(connect(config).get_executions_by_type(MONITOR_EXECUTION_TYPE),
                  key=lambda e: e.id)
