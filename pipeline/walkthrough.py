"""What the notebooks show of a run's artifacts: rows, history and metric tables, and figures.

Nothing here is pipeline logic: these functions only read what the components wrote, through the
same tf.Transform graph and TFMA output the pipeline uses. Importing this module quiets the
stack's known noise (`quiet.silence`); `verbose()` turns the logs back on.
"""

from __future__ import annotations

from skewless.pipeline.quiet import silence, verbose

silence()  # before TensorFlow is imported, so that its start-up lines are not shown

import datetime  # noqa: E402
import os  # noqa: E402
from typing import Any  # noqa: E402

import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
from tensorflow_metadata.proto.v0 import statistics_pb2  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx.dsl.components.base import base_component  # noqa: E402
from tfx.orchestration import data_types, metadata  # noqa: E402
from tfx.orchestration.experimental.interactive import execution_result  # noqa: E402
from tfx.orchestration.experimental.interactive.interactive_context import (  # noqa: E402
    InteractiveContext,
)
from tfx.orchestration.launcher import in_process_component_launcher  # noqa: E402

from skewless.pipeline import figures  # noqa: E402
from skewless.pipeline.figures import read_examples  # noqa: E402

__all__ = ["interactive_context", "statistics_table", "read_examples", "raw_and_transformed",
           "request_rows", "training_history", "metrics_by_slice", "verbose"]


class _OneEventPerInput(metadata.Metadata):
    """TFX's legacy MLMD handler, recording an artifact that feeds two inputs as one event.

    On a re-run, the cached Trainer's model is also the latest blessed model, so the Evaluator
    gets one artifact as `model` and `baseline_model`. The legacy handler writes two INPUT
    events for that pair, which MLMD refuses ("Given event already exists"; TFX then fails on
    "Component run context already exists"). TFX's own orchestrator writes one event with both
    keys in its path; so does this.
    """

    def _artifact_and_event_pairs(self, *args, **kwargs):
        pairs = super()._artifact_and_event_pairs(*args, **kwargs)
        merged, first = [], {}
        for pair in pairs:
            artifact_id = pair[0].id
            if len(pair) == 2 and artifact_id and artifact_id in first:
                first[artifact_id][1].path.steps.extend(pair[1].path.steps)
                continue
            if len(pair) == 2 and artifact_id:
                first[artifact_id] = pair
            merged.append(pair)
        return merged


class RerunnableContext(InteractiveContext):
    """An InteractiveContext that runs any number of times on the same MLMD store."""

    def run(self, component, enable_cache: bool = True, beam_pipeline_args=None):
        """Runs one component (as `InteractiveContext.run`), each run its own MLMD run."""
        pipeline_info = data_types.PipelineInfo(
            pipeline_name=self.pipeline_name, pipeline_root=self.pipeline_root,
            run_id=datetime.datetime.now().isoformat())
        for name, output in component.outputs.items():
            for artifact in output.get():
                artifact.pipeline_name = self.pipeline_name
                artifact.producer_component = component.id
                artifact.name = name
        if isinstance(component, base_component.BaseComponent):
            component._resolve_pip_dependencies(self.pipeline_root)  # as InteractiveContext
        launcher = in_process_component_launcher.InProcessComponentLauncher.create(
            component, pipeline_info,
            data_types.DriverArgs(enable_cache=enable_cache, interactive_resolution=True),
            _OneEventPerInput(self.metadata_connection_config),
            list(beam_pipeline_args or self.beam_pipeline_args), {})
        return execution_result.ExecutionResult(
            component=component, execution_id=launcher.launch().execution_id)


def interactive_context(pipeline: tfx.dsl.Pipeline) -> RerunnableContext:
    """An InteractiveContext on the pipeline's own root, MLMD store and Beam args, that can be
    run again on the same store (Restart & Run All, with `skewless run` in between)."""
    sqlite = pipeline.metadata_connection_config.sqlite.filename_uri
    if sqlite:
        os.makedirs(os.path.dirname(sqlite), exist_ok=True)
    os.makedirs(pipeline.pipeline_info.pipeline_root, exist_ok=True)
    return RerunnableContext(
        pipeline_name=pipeline.pipeline_info.pipeline_name,
        pipeline_root=pipeline.pipeline_info.pipeline_root,
        metadata_connection_config=pipeline.metadata_connection_config,
        beam_pipeline_args=pipeline.beam_pipeline_args,
    )


def statistics_table(statistics_uri: str, split: str = "train") -> pd.DataFrame:
    """TFDV's statistics of one split as a table (the TFDV widget needs a CDN to render).

    `missing` counts examples without the feature; `empty` counts examples where it is present
    with no value, which is how CsvExampleGen writes an empty cell.
    """
    dataset = figures.load_statistics(statistics_uri, split)
    rows = []
    for feature in dataset.features:
        common = figures.common_stats(feature)
        empty = figures.empty_count(feature)
        row = {"feature": figures.feature_name(feature),
               "type": statistics_pb2.FeatureNameStatistics.Type.Name(feature.type),
               "with value": common.num_non_missing - empty, "empty": empty,
               "missing": common.num_missing}
        if feature.HasField("num_stats"):
            s = feature.num_stats
            row.update(mean=s.mean, std=s.std_dev, min=s.min, max=s.max)
        elif feature.HasField("string_stats"):
            row.update(unique=feature.string_stats.unique)
        rows.append(row)
    return pd.DataFrame(rows).set_index("feature").sort_index()


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
    frame = pd.DataFrame(figures.read_history(model_run_uri))
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="epoch")
    return frame


def metrics_by_slice(evaluation_uri: str) -> pd.DataFrame:
    """The candidate model's TFMA metrics, one row per slice ("Overall" first)."""
    frame = pd.DataFrame.from_dict(figures.slice_metrics(evaluation_uri), orient="index")
    frame.index.name = "slice"
    if "example_count" in frame:
        frame["example_count"] = frame["example_count"].astype(int)
    return frame
