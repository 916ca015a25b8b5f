"""The pictures of a run, read from its artifacts: statistics, training curves, evaluation plots.

Each function takes an artifact's uri (and the config where the task matters) and returns a
`plots.Picture`; the notebooks call them in one line and the run report embeds them.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import statistics_pb2
from tensorflow_model_analysis.proto import metrics_for_slice_pb2
from tfx.utils import path_utils

from skewless.pipeline import plots
from skewless.pipeline.results import metric_checks, metrics_for_slices
from skewless.pipeline.run_config import PipelineConfig
from skewless.transforms.signatures import SERVING_TF_EXAMPLE
from skewless.transforms.task import BinaryTask, MulticlassTask, RegressionTask, Task
from skewless.transforms.training import HISTORY_FILE

PLOTS_FILE_PREFIX = "plots"
SPLITS = ("train", "eval")
# The PlotData fields of the TFMA plots that `build.plot_metrics` asks for.
CONFUSION_MATRIX_PLOT = "confusion_matrix_at_thresholds"
CALIBRATION_PLOT = "calibration_histogram_buckets"
MULTI_CLASS_CONFUSION_MATRIX_PLOT = "multi_class_confusion_matrix_at_thresholds"


def read_examples(examples_uri: str, split: str = "eval", limit: int = 5) -> list[bytes]:
    """The first `limit` serialized tf.Examples of one split of an Examples artifact."""
    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    if not files:
        raise FileNotFoundError(f"no split {split!r} under {examples_uri}")
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit)
    return [record.numpy() for record in dataset]


# Statistics ------------------------------------------------------------------------------------


def load_statistics(statistics_uri: str, split: str) -> statistics_pb2.DatasetFeatureStatistics:
    """TFDV's statistics of one split of an ExampleStatistics artifact."""
    path = os.path.join(statistics_uri, f"Split-{split}", "FeatureStats.pb")
    return tfdv.load_stats_binary(path).datasets[0]


def feature_name(feature: statistics_pb2.FeatureNameStatistics) -> str:
    return feature.path.step[0] if feature.path.step else feature.name


def common_stats(feature: statistics_pb2.FeatureNameStatistics):
    return getattr(feature, feature.WhichOneof("stats")).common_stats


def empty_count(feature: statistics_pb2.FeatureNameStatistics) -> int:
    """Examples where the feature is present with no value (CsvExampleGen's empty cells).

    Exact when a feature holds at most one value per example, as a CSV or Parquet column does
    (present examples less values); otherwise counted from TFDV's values-per-example quantiles.
    """
    common = common_stats(feature)
    if common.max_num_values <= 1:
        return int(common.num_non_missing - common.tot_num_values)
    buckets = common.num_values_histogram.buckets
    return int(round(sum(b.sample_count for b in buckets if b.high_value < 1)))


def _split_distribution(
    feature: statistics_pb2.FeatureNameStatistics, examples: int
) -> plots.SplitDistribution:
    common = common_stats(feature)
    shares = dict(missing=common.num_missing / examples if examples else 0.0,
                  empty=empty_count(feature) / examples if examples else 0.0)
    if feature.HasField("num_stats"):
        standard = [h for h in feature.num_stats.histograms
                    if h.type == statistics_pb2.Histogram.STANDARD]
        buckets = standard[0].buckets if standard else []
        edges = tuple([b.low_value for b in buckets[:1]] + [b.high_value for b in buckets])
        return plots.SplitDistribution(counts=tuple(b.sample_count for b in buckets),
                                       edges=edges or (0.0, 1.0),
                                       **shares) if buckets else plots.SplitDistribution(
            counts=(0.0,), edges=(0.0, 1.0), **shares)
    top = feature.string_stats.top_values
    return plots.SplitDistribution(counts=tuple(v.frequency for v in top),
                                   labels=tuple(v.value for v in top), **shares)


def statistics_figure(statistics_uri: str, splits: tuple[str, ...] = SPLITS) -> plots.Picture:
    """Per feature: train against eval, with the share of missing and of empty values."""
    datasets = {split: load_statistics(statistics_uri, split) for split in splits}
    return plots.feature_distributions(distributions(datasets))


def distributions(datasets: dict[str, statistics_pb2.DatasetFeatureStatistics]
                  ) -> list[plots.FeatureDistribution]:
    """Each feature's distribution in each named dataset, by feature name."""
    by_name: dict[str, dict[str, plots.SplitDistribution]] = {}
    for split, dataset in datasets.items():
        for feature in dataset.features:
            by_name.setdefault(feature_name(feature), {})[split] = _split_distribution(
                feature, dataset.num_examples)
    return [plots.FeatureDistribution(name, splits) for name, splits in sorted(by_name.items())]


# Training --------------------------------------------------------------------------------------


def read_history(model_run_uri: str) -> dict[str, list[float]]:
    """The Trainer's Keras history (`history.json` in the ModelRun artifact)."""
    with tf.io.gfile.GFile(os.path.join(model_run_uri, HISTORY_FILE)) as f:
        return json.load(f)


def training_figure(model_run_uri: str, task: Task) -> plots.Picture:
    """Loss and the task's metric per epoch, train against validation."""
    return plots.training_curves(read_history(model_run_uri), task.history_metric)


# Evaluation ------------------------------------------------------------------------------------


def overall_plots(evaluation_uri: str) -> metrics_for_slice_pb2.PlotData:
    """The candidate model's TFMA plots on the whole eval set (one PlotData, a field per plot)."""
    files = tf.io.gfile.glob(os.path.join(evaluation_uri, PLOTS_FILE_PREFIX + "*"))
    found = metrics_for_slice_pb2.PlotData()
    for record in tf.data.TFRecordDataset(files):
        plots_for_slice = metrics_for_slice_pb2.PlotsForSlice.FromString(record.numpy())
        if plots_for_slice.slice_key.single_slice_keys:
            continue
        for item in plots_for_slice.plot_keys_and_values:
            if item.key.model_name != "baseline":
                found.MergeFrom(item.value)
    return found


def threshold_curve(data: metrics_for_slice_pb2.PlotData) -> plots.ThresholdCurve:
    matrices = data.confusion_matrix_at_thresholds.matrices
    return plots.ThresholdCurve(
        thresholds=tuple(m.threshold for m in matrices),
        tp=tuple(m.true_positives for m in matrices),
        fp=tuple(m.false_positives for m in matrices),
        tn=tuple(m.true_negatives for m in matrices),
        fn=tuple(m.false_negatives for m in matrices),
    )


def calibration_buckets(data: metrics_for_slice_pb2.PlotData) -> plots.CalibrationBuckets:
    """The non-empty buckets: mean prediction and mean label of each."""
    buckets = [b for b in data.calibration_histogram_buckets.buckets
               if b.num_weighted_examples.value > 0]
    weight = [b.num_weighted_examples.value for b in buckets]
    return plots.CalibrationBuckets(
        predicted=tuple(b.total_weighted_refined_prediction.value / w
                        for b, w in zip(buckets, weight, strict=True)),
        actual=tuple(b.total_weighted_label.value / w for b, w in zip(buckets, weight,
                                                                        strict=True)),
        weight=tuple(weight),
    )


def class_matrix(data: metrics_for_slice_pb2.PlotData, classes: int) -> list[list[float]]:
    """Actual × predicted counts at the argmax threshold (TFMA's multi-class matrix)."""
    matrices = data.multi_class_confusion_matrix_at_thresholds.matrices
    matrix = [[0.0] * classes for _ in range(classes)]
    if matrices:
        for entry in min(matrices, key=lambda m: m.threshold).entries:
            if 0 <= entry.actual_class_id < classes and 0 <= entry.predicted_class_id < classes:
                matrix[entry.actual_class_id][entry.predicted_class_id] += (
                    entry.num_weighted_examples)
    return matrix


def predicted_and_actual(
    config: PipelineConfig, examples_uri: str, model_uri: str, limit: int = 2000
) -> tuple[list[float], list[float]]:
    """The model's predictions on up to `limit` labelled eval examples, and their labels.

    Runs the exported model's tf.Example signature, the one TFMA evaluates.
    """
    label = config.label.name
    serialized, actual = [], []
    for record in read_examples(examples_uri, "eval", limit):
        feature = tf.train.Example.FromString(record).features.feature.get(label)
        kind = feature.WhichOneof("kind") if feature is not None else None
        values = list(getattr(feature, kind).value) if kind else []
        if values:
            serialized.append(record)
            actual.append(float(values[0]))
    if not serialized:
        return [], []
    model = tf.saved_model.load(path_utils.serving_model_path(model_uri))
    outputs = model.signatures[SERVING_TF_EXAMPLE](examples=tf.constant(serialized))
    predicted = tf.reshape(outputs[config.task.prediction_key], [-1]).numpy()
    return [float(p) for p in predicted], actual


def evaluation_figure(
    config: PipelineConfig, evaluation_uri: str, examples_uri: str, model_uri: str
) -> plots.Picture:
    """The task's evaluation plots: ROC, precision-recall and calibration (binary), the
    confusion matrix (multiclass), predicted against actual and residuals (regression)."""
    task = config.task
    if isinstance(task, RegressionTask):
        return plots.regression_evaluation(
            *predicted_and_actual(config, examples_uri, model_uri))
    found = overall_plots(evaluation_uri)
    needed = {BinaryTask: (CONFUSION_MATRIX_PLOT, CALIBRATION_PLOT),
              MulticlassTask: (MULTI_CLASS_CONFUSION_MATRIX_PLOT,)}[type(task)]
    absent = [name for name in needed if not found.HasField(name)]
    if absent:
        raise ValueError(f"the evaluation at {evaluation_uri} has no {', '.join(absent)}; "
                         "it was made before the eval config asked for these plots")
    if isinstance(task, BinaryTask):
        return plots.binary_evaluation(threshold_curve(found), calibration_buckets(found))
    return plots.confusion_matrix(class_matrix(found, len(task.classes)), task.classes)


def _slice_name(slice_key) -> str:
    parts = []
    for single in slice_key.single_slice_keys:
        kind = single.WhichOneof("kind")
        value = getattr(single, kind) if kind else ""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        parts.append(f"{single.column}={value}")
    return ", ".join(parts) or "Overall"


def slice_metrics(evaluation_uri: str) -> dict[str, dict[str, float]]:
    """The candidate's metrics per slice ("Overall" first), without per-class values."""
    table: dict[str, dict[str, float]] = {}
    for metrics in metrics_for_slices(evaluation_uri):
        row = table.setdefault(_slice_name(metrics.slice_key), {})
        for kv in metrics.metric_keys_and_values:
            if kv.key.model_name == "baseline" or kv.key.is_diff or kv.key.HasField("sub_key"):
                continue
            if kv.value.HasField("double_value"):
                row[kv.key.name] = kv.value.double_value.value
    return dict(sorted(table.items(), key=lambda item: (item[0] != "Overall", item[0])))


def slices_figure(config: PipelineConfig, evaluation_uri: str) -> plots.Picture:
    """Each thresholded metric (or the task's first metric) per slice, with its bounds drawn."""
    table = slice_metrics(evaluation_uri)
    task = config.task
    checks = metric_checks(config, evaluation_uri)
    bounds = {c.metric: (c.lower_bound, c.upper_bound) for c in checks}
    names = list(bounds) or [task.metrics[0].class_name]
    shown = []
    for class_name in names:
        key = task.metric(class_name).key
        values = {name: row[key] for name, row in table.items() if key in row}
        lower, upper = bounds.get(class_name, (None, None))
        shown.append(plots.SliceMetric(class_name, values, lower, upper))
    return plots.metrics_by_slice(shown)
