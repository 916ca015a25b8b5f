"""What the walkthrough notebook shows of a run's artifacts: rows, history and metric tables.

Nothing here is pipeline logic: these functions only read what the components wrote, through the
same tf.Transform graph and TFMA output the pipeline uses.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pandas as pd
import tensorflow as tf
import tensorflow_data_validation as tfdv
import tensorflow_transform as tft
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx import v1 as tfx
from tfx.orchestration.experimental.interactive.interactive_context import InteractiveContext

from skewless.pipeline.results import metrics_for_slices
from skewless.transforms.training import HISTORY_FILE


def interactive_context(pipeline: tfx.dsl.Pipeline) -> InteractiveContext:
    """An InteractiveContext on the pipeline's own root, MLMD store and Beam args."""
    sqlite = pipeline.metadata_connection_config.sqlite.filename_uri
    if sqlite:
        os.makedirs(os.path.dirname(sqlite), exist_ok=True)
    os.makedirs(pipeline.pipeline_info.pipeline_root, exist_ok=True)
    return InteractiveContext(
        pipeline_name=pipeline.pipeline_info.pipeline_name,
        pipeline_root=pipeline.pipeline_info.pipeline_root,
        metadata_connection_config=pipeline.metadata_connection_config,
        beam_pipeline_args=pipeline.beam_pipeline_args,
    )


def statistics_table(statistics_uri: str, split: str = "train") -> pd.DataFrame:
    """TFDV's statistics of one split as a table (the TFDV widget needs a CDN to render)."""
    stats = tfdv.load_stats_binary(os.path.join(statistics_uri, f"Split-{split}",
                                                "FeatureStats.pb"))
    rows = []
    for feature in stats.datasets[0].features:
        kind = feature.WhichOneof("stats")
        common = getattr(feature, kind).common_stats
        row = {"feature": feature.path.step[0] if feature.path.step else feature.name,
               "type": statistics_pb2.FeatureNameStatistics.Type.Name(feature.type),
               "present": common.num_non_missing, "missing": common.num_missing}
        if kind == "num_stats":
            s = feature.num_stats
            row.update(mean=s.mean, std=s.std_dev, min=s.min, max=s.max)
        elif kind == "string_stats":
            row.update(unique=feature.string_stats.unique)
        rows.append(row)
    return pd.DataFrame(rows).set_index("feature").sort_index()


def read_examples(examples_uri: str, split: str = "eval", limit: int = 5) -> list[bytes]:
    """The first `limit` serialized tf.Examples of one split of an Examples artifact."""
    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    if not files:
        raise FileNotFoundError(f"no split {split!r} under {examples_uri}")
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit)
    return [record.numpy() for record in dataset]


def _column(value: tf.Tensor | tf.SparseTensor, rows: int) -> list[Any]:
    """One Python value per row; None where a sparse (optional) feature is absent."""
    if isinstance(value, tf.SparseTensor):
        cells: list[Any] = [None] * rows
        for index, item in zip(value.indices.numpy(), value.values.numpy(), strict=True):
            cells[index[0]] = item
    else:
        cells = list(tf.reshape(value, [rows, -1])[:, 0].numpy())
    return [c.decode("utf-8", "replace") if isinstance(c, bytes) else c for c in cells]


def raw_and_transformed(
    examples_uri: str, transform_graph_uri: str, split: str = "eval", limit: int = 5
) -> pd.DataFrame:
    """Raw rows next to what the Transform graph makes of them (the graph the model serves with).

    Returns:
        One row per example; columns ("raw", feature) then ("transformed", feature).
    """
    tft_output = tft.TFTransformOutput(transform_graph_uri)
    serialized = read_examples(examples_uri, split, limit)
    raw = tf.io.parse_example(tf.constant(serialized), tft_output.raw_feature_spec())
    transformed = tft_output.transform_raw_features(raw, drop_unused_features=True)
    rows = len(serialized)
    columns = {("raw", n): _column(v, rows) for n, v in sorted(raw.items())}
    columns.update({("transformed", n): _column(v, rows) for n, v in sorted(transformed.items())})
    return pd.DataFrame(columns)


def request_rows(
    examples_uri: str, feature_names: tuple[str, ...], split: str = "eval", limit: int = 3
) -> list[dict[str, Any]]:
    """Up to `limit` examples with every feature present, as the raw rows a client sends."""
    rows = []
    for serialized in read_examples(examples_uri, split, limit=200):
        features = tf.train.Example.FromString(serialized).features.feature
        row = {}
        for name in feature_names:
            kind = features[name].WhichOneof("kind") if name in features else None
            values = list(getattr(features[name], kind).value) if kind else []
            if not values:
                break
            value = values[0]
            row[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        else:
            rows.append(row)
        if len(rows) == limit:
            break
    return rows


def training_history(model_run_uri: str) -> pd.DataFrame:
    """The Trainer's Keras history: one row per epoch, one column per metric."""
    with tf.io.gfile.GFile(os.path.join(model_run_uri, HISTORY_FILE)) as f:
        history = json.load(f)
    frame = pd.DataFrame(history)
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="epoch")
    return frame


def _slice_name(slice_key) -> str:
    parts = []
    for single in slice_key.single_slice_keys:
        kind = single.WhichOneof("kind")
        value = getattr(single, kind) if kind else ""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        parts.append(f"{single.column}={value}")
    return ", ".join(parts) or "Overall"


def metrics_by_slice(evaluation_uri: str) -> pd.DataFrame:
    """The candidate model's TFMA metrics, one row per slice ("Overall" first)."""
    table: dict[str, dict[str, float]] = {}
    for metrics in metrics_for_slices(evaluation_uri):
        row = table.setdefault(_slice_name(metrics.slice_key), {})
        for kv in metrics.metric_keys_and_values:
            if kv.key.model_name == "baseline" or kv.key.is_diff:
                continue
            if kv.value.HasField("double_value"):
                row[kv.key.name] = kv.value.double_value.value
    frame = pd.DataFrame.from_dict(table, orient="index").sort_index()
    overall = [name for name in frame.index if name == "Overall"]
    frame = frame.loc[overall + [name for name in frame.index if name != "Overall"]]
    frame.index.name = "slice"
    if "example_count" in frame:
        frame["example_count"] = frame["example_count"].astype(int)
    return frame
