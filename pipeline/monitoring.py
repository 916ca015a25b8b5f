"""Training–serving skew, drift and prediction drift of a served model, from its request logs.

`monitor` reads the logs (`request_logs`), builds TFDV statistics of the requests with Beam,
validates them against the served model's schema in the SERVING environment (every column that
is not a feature, the label's among them, is left out of it), and measures with TFDV's
comparators: L-infinity for categorical features, Jensen-Shannon divergence for numeric ones.

- skew: the last window of requests against the training split's statistics of the served
  version (found through MLMD lineage, `monitor_store`);
- drift: the last window against the window before it (windows by the logs' timestamps, the
  last one ending at the newest request);
- prediction drift: the served predictions (from the logged responses, or recomputed with the
  served model when the logs hold none) against the model's predictions on the eval split.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections import Counter
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from skewless.pipeline.figures import feature_name, load_statistics, read_examples
from skewless.pipeline.monitor_store import ServedModel
from skewless.pipeline.request_logs import LoggedRequest, RequestLogs, row_example
from skewless.pipeline.run_config import PipelineConfig
from skewless.transforms.signatures import SERVING_TF_EXAMPLE
from skewless.transforms.task import MulticlassTask

SERVING = "SERVING"
TRAINING = "TRAINING"
PREDICTION = "prediction"
SPLIT = "serving"  # the split name of the serving statistics and anomalies artifacts
L_INFINITY = "L-infinity"
JENSEN_SHANNON = "Jensen-Shannon"
_MEASUREMENT_NAMES = {
    anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: L_INFINITY,
    anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: JENSEN_SHANNON,
}
EVAL_PREDICTION_ROWS = 2000
# Jensen-Shannon divergence over TFDV's quantile histograms: equal-width histograms put a long
# tail's few values and the bulk of the data into one bucket, and TFDV's re-bucketing then
# spreads that bucket evenly, which reads as skew between two samples of the same data.
HISTOGRAM = schema_pb2.HistogramSelection.QUANTILES


class MonitorError(ValueError):
    """The monitor cannot compare; the message is the one line a user sees."""


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One feature (or the prediction) measured by one comparator against its threshold."""

    check: str  # skew | drift | prediction_drift
    feature: str
    comparator: str
    distance: float | None  # None: nothing to compare with (e.g. no previous window)
    threshold: float

    @property
    def failed(self) -> bool:
        return self.distance is not None and self.distance > self.threshold

    @property
    def status(self) -> str:
        return "n/a" if self.distance is None else ("FAIL" if self.failed else "ok")


@dataclasses.dataclass(frozen=True)
class SchemaAnomaly:
    feature: str
    kind: str
    description: str


@dataclasses.dataclass(frozen=True)
class Windows:
    """The last window of requests and the one before it, as [start, end) in epoch seconds."""

    current: tuple[int, int]
    previous: tuple[int, int]


@dataclasses.dataclass(frozen=True)
class MonitorResult:
    model_name: str
    version: int
    windows: Windows
    requests: int  # logged requests in the last window
    rows: int  # rows in those requests
    previous_rows: int
    files: int
    corrupt: int
    unsupported: int
    predictions_from: str  # "logs" | "model"
    served_versions: dict[int, int]  # requests of the last window by the version that served them
    comparisons: tuple[Comparison, ...]
    anomalies: tuple[SchemaAnomaly, ...]
    training: statistics_pb2.DatasetFeatureStatistics
    serving: statistics_pb2.DatasetFeatureStatistics
    anomalies_proto: anomalies_pb2.Anomalies

    @property
    def failures(self) -> tuple[Comparison, ...]:
        return tuple(c for c in self.comparisons if c.failed)


def windows_of(requests: list[LoggedRequest], seconds: int) -> Windows:
    """The window ending just after the newest request, and the one before it."""
    end = max(r.timestamp for r in requests) + 1
    return Windows((end - seconds, end), (end - 2 * seconds, end - seconds))


def _in(requests: list[LoggedRequest], window: tuple[int, int]) -> list[LoggedRequest]:
    return [r for r in requests if window[0] <= r.timestamp < window[1]]


# Statistics -------------------------------------------------------------------------------------


def _arrow_type(values: list[Any], declared: int | None) -> pa.DataType:
    present = [v for v in values if v is not None]
    if any(isinstance(v, str | bytes) for v in present):
        return pa.binary()
    if declared == schema_pb2.FLOAT or any(isinstance(v, float) for v in present):
        return pa.float32()
    return pa.int64()


def record_batch(rows: list[dict[str, Any]], names: tuple[str, ...],
                 schema: schema_pb2.Schema) -> pa.RecordBatch:
    """Rows as the Arrow batch TFDV reads: one list column per feature, null where missing."""
    declared = {f.name: f.type for f in schema.feature}
    columns, fields = [], []
    for name in names:
        values = [row.get(name) for row in rows]
        kind = _arrow_type(values, declared.get(name))
        if kind == pa.binary():
            values = [v if v is None or isinstance(v, bytes) else str(v).encode()
                      for v in values]
        columns.append(pa.array([None if v is None else [v] for v in values],
                                type=pa.list_(kind)))
        fields.append(name)
    return pa.RecordBatch.from_arrays(columns, fields)


Statistics = statistics_pb2.DatasetFeatureStatistics


def generate_statistics(batches: dict[str, pa.RecordBatch], output_dir: Path,
                        beam_args: tuple[str, ...]) -> dict[str, Statistics]:
    """TFDV statistics of each named batch, in one Beam pipeline; each written to
    `<output_dir>/Split-<name>/FeatureStats.pb` as StatisticsGen writes them."""
    with beam.Pipeline(argv=list(beam_args)) as pipeline:
        for name, batch in batches.items():
            path = output_dir / f"Split-{name}" / "FeatureStats.pb"
            path.parent.mkdir(parents=True, exist_ok=True)
            _ = (pipeline
                 | f"Requests[{name}]" >> beam.Create([batch])
                 | f"Statistics[{name}]" >> tfdv.GenerateStatistics(tfdv.StatsOptions())
                 | f"Write[{name}]" >> tfdv.WriteStatisticsToBinaryFile(str(path)))
    return {name: load_statistics(str(output_dir), name) for name in batches}


def _listed(dataset: statistics_pb2.DatasetFeatureStatistics
            ) -> statistics_pb2.DatasetFeatureStatisticsList:
    return statistics_pb2.DatasetFeatureStatisticsList(datasets=[dataset])


# Comparison -------------------------------------------------------------------------------------


def uses_l_infinity(config: PipelineConfig, feature: schema_pb2.Feature) -> bool:
    """L-infinity for categorical features with string statistics; Jensen-Shannon otherwise.

    StatisticsGen keeps histograms, not value counts, for an integer feature, so an integer
    categorical feature (taxi's trip_start_hour) is measured by Jensen-Shannon divergence.
    """
    string_stats = feature.type == schema_pb2.BYTES or (
        feature.HasField("int_domain") and feature.int_domain.is_categorical)
    return feature.name in config.features.categorical.names and string_stats


def serving_schema(config: PipelineConfig, schema: schema_pb2.Schema) -> schema_pb2.Schema:
    """The served model's schema with a SERVING environment of the features only, and the
    config's skew and drift comparators and thresholds on each feature."""
    schema = copy.deepcopy(schema)
    del schema.default_environment[:]
    schema.default_environment.extend([TRAINING, SERVING])
    features = set(config.features.raw_names)
    for feature in schema.feature:
        if feature.name not in features:
            feature.not_in_environment.append(SERVING)
            continue
        threshold = config.monitoring.threshold_of(feature.name)
        for comparator in (feature.skew_comparator, feature.drift_comparator):
            if uses_l_infinity(config, feature):
                comparator.infinity_norm.threshold = threshold
            else:
                comparator.jensen_shannon_divergence.threshold = threshold
                comparator.jensen_shannon_divergence.source.type = HISTOGRAM
    return schema


def _measurements(info: anomalies_pb2.Anomalies, field: str) -> dict[str, tuple[str, float]]:
    found = {}
    for item in info.drift_skew_info:
        for measurement in getattr(item, field):
            found[item.path.step[0]] = (_MEASUREMENT_NAMES.get(measurement.type, "?"),
                                        measurement.value)
    return found


def _comparisons(check: str, measured: dict[str, tuple[str, float]], config: PipelineConfig,
                 schema: schema_pb2.Schema) -> list[Comparison]:
    rows = []
    for feature in schema.feature:
        if feature.name not in config.features.raw_names:
            continue
        comparator, distance = measured.get(feature.name, (
            L_INFINITY if uses_l_infinity(config, feature) else JENSEN_SHANNON, None))
        rows.append(Comparison(check, feature.name, comparator, distance,
                               config.monitoring.threshold_of(feature.name)))
    return rows


def schema_anomalies(anomalies: anomalies_pb2.Anomalies) -> list[SchemaAnomaly]:
    """TFDV's anomalies, one per feature and kind, without the skew and drift ones (those are
    the comparisons)."""
    comparisons = {anomalies_pb2.AnomalyInfo.COMPARATOR_L_INFTY_HIGH,
                   anomalies_pb2.AnomalyInfo.COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH}
    found = []
    for name, info in sorted(anomalies.anomaly_info.items()):
        for reason in info.reason:
            if reason.type not in comparisons:
                kind = anomalies_pb2.AnomalyInfo.Type.Name(reason.type)
                found.append(SchemaAnomaly(name, kind, reason.description))
    return found


# Predictions ------------------------------------------------------------------------------------


def model_predictions(config: PipelineConfig, model, examples: list[bytes]) -> list:
    """A loaded model's predictions on serialized tf.Examples (its tf.Example signature)."""
    if not examples:
        return []
    key = "classes" if isinstance(config.task, MulticlassTask) else config.task.prediction_key
    outputs = model.signatures[SERVING_TF_EXAMPLE](examples=tf.constant(examples))[key]
    values = tf.reshape(outputs, [-1]).numpy().tolist()
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def _prediction_batch(values: list, config: PipelineConfig) -> pa.RecordBatch:
    kind = pa.binary() if isinstance(config.task, MulticlassTask) else pa.float32()
    if kind == pa.binary():
        values = [str(v).encode() for v in values]
    return pa.RecordBatch.from_arrays([pa.array([[v] for v in values], type=pa.list_(kind))],
                                      [PREDICTION])


def _prediction_schema(config: PipelineConfig) -> schema_pb2.Schema:
    schema = schema_pb2.Schema()
    feature = schema.feature.add(name=PREDICTION)
    threshold = config.monitoring.prediction_threshold
    if isinstance(config.task, MulticlassTask):
        feature.type = schema_pb2.BYTES
        feature.skew_comparator.infinity_norm.threshold = threshold
    else:
        feature.type = schema_pb2.FLOAT
        feature.skew_comparator.jensen_shannon_divergence.threshold = threshold
        feature.skew_comparator.jensen_shannon_divergence.source.type = HISTOGRAM
    return schema


# The whole check --------------------------------------------------------------------------------


def monitor(config: PipelineConfig, served: ServedModel, logs: RequestLogs, output_dir: Path,
            window_seconds: int | None = None) -> MonitorResult:
    """Measures skew, drift and prediction drift of the logged requests; writes the statistics
    under `output_dir/statistics` and the anomalies under `output_dir/anomalies`.

    Raises:
        MonitorError: no request in the last window has a feature of the model.
    """
    seconds = window_seconds or config.monitoring.window_seconds
    windows = windows_of(logs.requests, seconds)
    current, previous = _in(logs.requests, windows.current), _in(logs.requests, windows.previous)
    names = config.features.raw_names
    rows = [row for r in current for row in r.rows]
    if not any(name in row for row in rows for name in names):
        raise MonitorError(f"no logged request of model {config.serving.model_name!r} has any of "
                           f"its features ({', '.join(names)})")
    schema = tfdv.load_schema_text(os.path.join(served.schema_uri, "schema.pbtxt"))
    previous_rows = [row for r in previous for row in r.rows]

    model = tf.saved_model.load(served.path)
    served_predictions = [p for r in current for p in (r.predictions or [])]
    predictions_from = "logs"
    if any(r.predictions is None for r in current):
        predictions_from = "model"
        served_predictions = model_predictions(config, model, [row_example(
            {k: v for k, v in row.items() if k in names}).SerializeToString() for row in rows])
    eval_predictions = model_predictions(config, model, read_examples(
        served.examples_uri, "eval", EVAL_PREDICTION_ROWS))

    batches = {SPLIT: record_batch(rows, names, schema)}
    if previous_rows:
        batches["previous"] = record_batch(previous_rows, names, schema)
    batches["served_predictions"] = _prediction_batch(served_predictions, config)
    batches["eval_predictions"] = _prediction_batch(eval_predictions, config)
    statistics = generate_statistics(batches, output_dir / "statistics", config.beam.args)

    training = load_statistics(served.statistics_uri, "train")
    checked = serving_schema(config, schema)
    anomalies = tfdv.validate_statistics(
        _listed(statistics[SPLIT]), checked, environment=SERVING,
        previous_statistics=_listed(statistics["previous"]) if previous_rows else None)
    skew = tfdv.validate_statistics(_listed(training), checked, environment=SERVING,
                                    serving_statistics=_listed(statistics[SPLIT]))
    prediction = tfdv.validate_statistics(
        _listed(statistics["eval_predictions"]), _prediction_schema(config),
        serving_statistics=_listed(statistics["served_predictions"]))
    anomalies.drift_skew_info.extend(skew.drift_skew_info)
    write_anomalies(anomalies, output_dir / "anomalies")

    comparisons = _comparisons("skew", _measurements(skew, "skew_measurements"), config, checked)
    comparisons += _comparisons("drift", _measurements(anomalies, "drift_measurements"), config,
                                checked)
    [(comparator, distance)] = _measurements(prediction, "skew_measurements").values() or [
        (JENSEN_SHANNON, None)]
    comparisons.append(Comparison("prediction_drift", PREDICTION, comparator, distance,
                                  config.monitoring.prediction_threshold))
    return MonitorResult(
        model_name=config.serving.model_name, version=served.version, windows=windows,
        requests=len(current), rows=len(rows), previous_rows=len(previous_rows),
        files=logs.files, corrupt=logs.corrupt, unsupported=logs.unsupported,
        predictions_from=predictions_from,
        served_versions=dict(sorted(Counter(r.version or 0 for r in current).items())),
        comparisons=tuple(comparisons),
        anomalies=tuple(schema_anomalies(anomalies)), training=training,
        serving=statistics[SPLIT], anomalies_proto=anomalies)


def write_anomalies(anomalies: anomalies_pb2.Anomalies, uri: Path) -> None:
    """The anomalies as ExampleValidator writes them (`Split-<split>/SchemaDiff.pb`)."""
    path = uri / f"Split-{SPLIT}" / "SchemaDiff.pb"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(anomalies.SerializeToString())


def feature_names(dataset: statistics_pb2.DatasetFeatureStatistics) -> list[str]:
    return [feature_name(f) for f in dataset.features]
