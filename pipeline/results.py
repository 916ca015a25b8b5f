"""Reads a run's outcome back from ML Metadata: blessing, metrics against thresholds, the push."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator

import tensorflow as tf
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tensorflow_model_analysis.proto import metrics_for_slice_pb2

from skewless.components.anomaly_gate.executor import Anomaly, read_anomalies_at
from skewless.components.infra_validator import executor as infra_validator
from skewless.components.row_count_check.executor import count_statistics_at
from skewless.components.tuner import executor as tuner_executor
from skewless.pipeline.build import (
    EVALUATOR,
    EXAMPLE_VALIDATOR,
    HYPERPARAMETERS_IMPORTER,
    INFRA_VALIDATOR,
    PUSHER,
    SCHEMA_GEN,
    STATISTICS_GEN,
    TRAINER,
    TUNER,
)
from skewless.pipeline.run_config import PipelineConfig
from skewless.pipeline.store import (
    connect,
    is_blessed,
    latest_output,
    newest_execution,
    pushed_destination,
    pushed_version,
)

METRICS_FILE_PREFIX = "metrics"


@dataclasses.dataclass(frozen=True)
class MetricCheck:
    """One configured threshold, the candidate's value and (when there is one) the baseline's."""

    metric: str
    value: float | None
    baseline: float | None
    higher_is_better: bool
    lower_bound: float | None = None
    upper_bound: float | None = None
    max_decrease: float | None = None
    max_increase: float | None = None
    passed: bool = False

    @property
    def change_limit(self) -> float | None:
        """How far the value may move the wrong way from the baseline."""
        return self.max_decrease if self.higher_is_better else self.max_increase


@dataclasses.dataclass(frozen=True)
class TuningOutcome:
    """The hyperparameters the Trainer took: searched in this run, or reused from an earlier."""

    values: dict[str, object]
    objective: str
    score: float | None
    trials: int
    failed: int
    reused: bool


@dataclasses.dataclass(frozen=True)
class ServingCheck:
    """What the InfraValidator measured; `problem` says why it did not bless ("" if it did)."""

    problem: str
    load_seconds: float | None
    requests: int
    latency_ms_max: float | None

    @classmethod
    def from_blessing(cls, blessing: metadata_store_pb2.Artifact) -> ServingCheck:
        props = blessing.custom_properties

        def number(name: str) -> float | None:
            return props[name].double_value if name in props else None

        return cls(
            problem=props[infra_validator.PROBLEM_PROPERTY].string_value,
            load_seconds=number(infra_validator.LOAD_SECONDS_PROPERTY),
            requests=props[infra_validator.REQUESTS_PROPERTY].int_value,
            latency_ms_max=number(infra_validator.LATENCY_MAX_PROPERTY),
        )


@dataclasses.dataclass(frozen=True)
class RunSummary:
    blessed: bool | None
    checks: tuple[MetricCheck, ...]
    metrics: dict[str, float]  # the task's metrics of the candidate, on the whole eval set
    pushed_version: str | None
    pushed_path: str | None
    examples: int | None
    tuning: TuningOutcome | None = None
    serving_check: ServingCheck | None = None  # None when the InfraValidator did not run


HYPERPARAMETERS = "HyperParameters"


def best_values(artifact: metadata_store_pb2.Artifact) -> dict[str, object]:
    """The tuned values a best hyperparameters artifact holds (KerasTuner's bookkeeping aside)."""
    raw = artifact.custom_properties.get(tuner_executor.VALUES_PROPERTY)
    values = json.loads(raw.string_value) if raw is not None else {}
    return {k: v for k, v in values.items() if not k.startswith("tuner/")}


def tuning_outcome(store: metadata_store.MetadataStore, config: PipelineConfig
                   ) -> TuningOutcome | None:
    """The hyperparameters the newest Trainer took, and whether this run searched for them."""
    name = config.pipeline.name
    used = latest_output(store, name, TRAINER, HYPERPARAMETERS, metadata_store_pb2.Event.INPUT)
    if used is None:
        return None
    tuned = newest_execution(store, name, TUNER)
    imported = newest_execution(store, name, HYPERPARAMETERS_IMPORTER)
    reused = imported is not None and (tuned is None or imported.id > tuned.id)
    props = used.custom_properties
    score = props.get(tuner_executor.SCORE_PROPERTY)
    return TuningOutcome(
        values=best_values(used),
        objective=props[tuner_executor.OBJECTIVE_PROPERTY].string_value,
        score=None if score is None else score.double_value,
        trials=props[tuner_executor.TRIALS_PROPERTY].int_value,
        failed=props[tuner_executor.FAILED_PROPERTY].int_value,
        reused=reused,
    )


def reusable_hyperparameters(config: PipelineConfig, fingerprint: str) -> str | None:
    """The URI of the newest best hyperparameters a search with this fingerprint found for
    the pipeline, or None (no such search yet, or no store yet)."""
    if config.metadata.sqlite is not None and not config.metadata.sqlite.is_file():
        return None
    store = connect(config)
    context = store.get_context_by_type_and_name("pipeline", config.pipeline.name)
    if context is None:
        return None
    found = [a for a in store.get_artifacts_by_context(context.id)
             if a.type == HYPERPARAMETERS and a.state == metadata_store_pb2.Artifact.LIVE
             and a.custom_properties.get(tuner_executor.FINGERPRINT_PROPERTY) is not None
             and a.custom_properties[tuner_executor.FINGERPRINT_PROPERTY].string_value
             == fingerprint]
    return max(found, key=lambda a: a.id).uri if found else None


def _read_records(directory: str, prefix: str, message_type):
    files = tf.io.gfile.glob(os.path.join(directory, prefix + "*"))
    for record in tf.data.TFRecordDataset(files):
        yield message_type.FromString(record.numpy())


def metrics_for_slices(evaluation_uri: str) -> Iterator[metrics_for_slice_pb2.MetricsForSlice]:
    """The MetricsForSlice records TFMA wrote for an evaluation, one per slice."""
    return _read_records(evaluation_uri, METRICS_FILE_PREFIX, metrics_for_slice_pb2.MetricsForSlice)


def overall_metrics(evaluation_uri: str) -> dict[tuple[str, bool, bool], float]:
    """Overall-slice metrics as {(name, is_baseline, is_diff): value}."""
    values = {}
    for metrics in metrics_for_slices(evaluation_uri):
        if metrics.slice_key.single_slice_keys:
            continue
        for kv in metrics.metric_keys_and_values:
            # Per-class values (a sub_key) are the notebooks' and the report's, not the summary's.
            if kv.value.HasField("double_value") and not kv.key.HasField("sub_key"):
                key = (kv.key.name, kv.key.model_name == "baseline", kv.key.is_diff)
                values[key] = kv.value.double_value.value
    return values


def _passes(check: MetricCheck) -> bool:
    value, baseline = check.value, check.baseline
    if value is None:
        return False
    if check.lower_bound is not None and value < check.lower_bound:
        return False
    if check.upper_bound is not None and value > check.upper_bound:
        return False
    if baseline is None or check.change_limit is None:
        return True
    change = value - baseline
    return -change <= check.max_decrease if check.higher_is_better else change <= check.max_increase


def metric_checks(config: PipelineConfig, evaluation_uri: str) -> tuple[MetricCheck, ...]:
    """The config's thresholds against the candidate's (and baseline's) overall metrics."""
    values = overall_metrics(evaluation_uri)
    task = config.task
    checks = []
    for threshold in config.evaluation.thresholds:
        metric = task.metric(threshold.metric)
        check = MetricCheck(
            metric=threshold.metric,
            value=values.get((metric.key, False, False)),
            baseline=values.get((metric.key, True, False)),
            higher_is_better=bool(metric.higher_is_better),
            lower_bound=threshold.lower_bound,
            upper_bound=threshold.upper_bound,
            max_decrease=threshold.max_decrease,
            max_increase=threshold.max_increase,
        )
        checks.append(dataclasses.replace(check, passed=_passes(check)))
    return tuple(checks)


def task_metrics(config: PipelineConfig, evaluation_uri: str) -> dict[str, float]:
    """The task's metrics of the candidate model, by metric class name, overall."""
    values = overall_metrics(evaluation_uri)
    return {m.class_name: values[(m.key, False, False)] for m in config.task.metrics
            if (m.key, False, False) in values}


def summarize(config: PipelineConfig) -> RunSummary:
    """The outcome of the newest run recorded in MLMD for this pipeline."""
    store = connect(config)
    name = config.pipeline.name
    evaluation = latest_output(store, name, EVALUATOR, "ModelEvaluation")
    blessing = latest_output(store, name, EVALUATOR, "ModelBlessing")
    pushed = latest_output(store, name, PUSHER, "PushedModel")
    infra = latest_output(store, name, INFRA_VALIDATOR, "InfraBlessing")
    statistics = latest_output(store, name, STATISTICS_GEN, "ExampleStatistics")
    blessed = None if blessing is None else is_blessed(blessing)
    version = path = None
    if pushed is not None and pushed_version(pushed) is not None:
        version, path = str(pushed_version(pushed)), pushed_destination(pushed)
    examples = None
    if statistics is not None:
        examples = sum(count_statistics_at(statistics.uri, split_names(statistics)).values())
    checks = metric_checks(config, evaluation.uri) if evaluation is not None else ()
    metrics = task_metrics(config, evaluation.uri) if evaluation is not None else {}
    serving_check = ServingCheck.from_blessing(infra) if infra is not None else None
    return RunSummary(blessed, checks, metrics, version, path, examples,
                      tuning_outcome(store, config), serving_check)


def split_names(artifact: metadata_store_pb2.Artifact) -> list[str]:
    for properties in (artifact.properties, artifact.custom_properties):
        if "split_names" in properties:
            return json.loads(properties["split_names"].string_value)
    return []


def latest_anomalies(config: PipelineConfig) -> list[Anomaly]:
    """The anomalies ExampleValidator recorded in the newest run."""
    artifact = latest_output(
        connect(config), config.pipeline.name, EXAMPLE_VALIDATOR, "ExampleAnomalies"
    )
    if artifact is None:
        return []
    return read_anomalies_at(artifact.uri, split_names(artifact))


def latest_schema_uri(config: PipelineConfig) -> str | None:
    artifact = latest_output(connect(config), config.pipeline.name, SCHEMA_GEN, "Schema")
    return None if artifact is None else artifact.uri
