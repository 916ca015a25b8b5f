"""Scores examples with a pushed model's `serving_tf_example` signature in Beam, like TFX's
BulkInferrer, and writes one table of predictions: the input columns (all, or the kept ones) and
the model's outputs, as Parquet or CSV, written to a temporary file and renamed.

The Transform graph is the one inside the model, so the batch path has no skew of its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import tensorflow as tf
from absl import logging
from tensorflow.core.protobuf import saved_model_pb2
from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils

from skewless.components.data_formats import count_records
from skewless.components.serving_model.executor import PUSHED_DESTINATION, PUSHED_VERSION
from skewless.transforms.signatures import SERVING_TF_EXAMPLE

EXAMPLES_KEY = "examples"
MODEL_KEY = "model"
PREDICTIONS_KEY = "predictions"
OUTPUT_PATH_KEY = "output_path"
OUTPUT_FORMAT_KEY = "output_format"
KEEP_KEY = "keep"
OVERWRITE_KEY = "overwrite"
OUTPUT_FORMATS = ("parquet", "csv")
# Rows scored per signature call (batching is worth ~40x over single rows, shared/STACK.md).
MAX_BATCH = 256
STAGING = "scored"
# Custom properties of the predictions artifact.
ROWS_IN, ROWS_OUT = "rows_in", "rows_out"


class RowCountMismatch(RuntimeError):
    """Rows were lost or invented between the examples and the predictions."""


class OutputExists(FileExistsError):
    """The output path exists and overwriting was not asked for."""


def prediction_features(outputs: dict[str, np.ndarray], row: int) -> dict[str, tf.train.Feature]:
    """One row's model outputs as features: a `[batch]` or `[batch, 1]` output is one column
    named after it, a `[batch, k]` output is k columns `<name>_<i>`."""
    features = {}
    for name, values in sorted(outputs.items()):
        cells = np.reshape(values[row], -1)
        names = [name] if cells.size == 1 else [f"{name}_{i}" for i in range(cells.size)]
        for column, cell in zip(names, cells, strict=True):
            features[column] = _feature_of(cell)
    return features


def _feature_of(cell: Any) -> tf.train.Feature:
    if isinstance(cell, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[cell]))
    if np.issubdtype(type(cell), np.integer):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(cell)]))
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(cell)]))


class _Score(beam.DoFn):
    """Batches of serialized tf.Examples to tf.Examples holding inputs and predictions."""

    def __init__(self, model_dir: str, keep: tuple[str, ...]):
        self._model_dir = model_dir
        self._keep = keep
        self._signature = None

    def setup(self) -> None:
        model = tf.saved_model.load(self._model_dir)
        self._model = model  # the signature holds no reference to its model's variables
        self._signature = model.signatures[SERVING_TF_EXAMPLE]

    def process(self, batch: list[bytes]) -> Iterator[bytes]:
        outputs = {k: v.numpy() for k, v in self._signature(examples=tf.constant(batch)).items()}
        for row, serialized in enumerate(batch):
            example = tf.train.Example.FromString(serialized)
            features = example.features.feature
            if self._keep:
                kept = {k: features[k] for k in self._keep if k in features}
                example = tf.train.Example(features=tf.train.Features(feature=kept))
                features = example.features.feature
            for name, feature in prediction_features(outputs, row).items():
                if name in features and not self._keep:
                    raise ValueError(f"the input has a column {name!r}, as the model's output")
                features[name].CopyFrom(feature)
            yield example.SerializeToString()


def score(pipeline: beam.Pipeline, pattern: str, model_dir: str, keep: tuple[str, ...],
          staging_prefix: str) -> None:
    """The Beam graph: read examples, score in batches, write scored tf.Examples to staging."""
    _ = (
        pipeline
        | "Read" >> beam.io.ReadFromTFRecord(pattern, coder=beam.coders.BytesCoder())
        | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=MAX_BATCH)
        | "Score" >> beam.ParDo(_Score(model_dir, keep))
        | "Write" >> beam.io.WriteToTFRecord(staging_prefix, file_name_suffix=".gz")
    )


def _cell(feature: tf.train.Feature, column: str) -> tuple[str | None, Any]:
    kind = feature.WhichOneof("kind")
    if kind is None:
        return None, None
    values = list(getattr(feature, kind).value)
    if len(values) > 1:
        raise ValueError(f"column {column!r} holds {len(values)} values in a row; "
                         "batch predictions write one value per cell")
    value = values[0] if values else None
    return kind, value.decode("utf-8", "replace") if isinstance(value, bytes) else value


_ARROW_TYPES = {"int64_list": pa.int64(), "float_list": pa.float32(), "bytes_list": pa.string()}


def output_names(model_dir: str) -> list[str]:
    """The output keys of the model's `serving_tf_example` signature."""
    proto = saved_model_pb2.SavedModel.FromString(
        tf.io.gfile.GFile(os.path.join(model_dir, "saved_model.pb"), "rb").read())
    return sorted(proto.meta_graphs[0].signature_def[SERVING_TF_EXAMPLE].outputs)


def is_prediction(column: str, outputs: list[str]) -> bool:
    """Whether a column holds a model output (`<output>` or `<output>_<i>`)."""
    return any(column == key or (column.startswith(key + "_") and
                                 column[len(key) + 1:].isdigit()) for key in outputs)


def examples_to_table(examples: list[tf.train.Example], first: tuple[str, ...],
                      outputs: list[str]) -> pa.Table:
    """A table of scored tf.Examples: the `first` input columns in that order (else every input
    column, sorted), then the predictions; an empty list is a null of the column's type."""
    names = {name for e in examples for name in e.features.feature}
    predicted = sorted(n for n in names if is_prediction(n, outputs))
    inputs = [n for n in first if n in names] or sorted(names.difference(predicted))
    order = inputs + predicted
    columns = {}
    for name in order:
        kinds, cells = set(), []
        for example in examples:
            feature = example.features.feature.get(name)
            kind, value = _cell(feature, name) if feature is not None else (None, None)
            if kind is not None:
                kinds.add(kind)
            cells.append(value)
        [kind] = kinds or {"bytes_list"}
        columns[name] = pa.array(cells, type=_ARROW_TYPES[kind])
    return pa.table(columns)


def write_table(table: pa.Table, path: str, fmt: str, overwrite: bool) -> None:
    """Writes to a hidden file beside `path`, then renames it over `path`.

    Raises:
        OutputExists: `path` exists and `overwrite` is false.
    """
    if tf.io.gfile.exists(path) and not overwrite:
        raise OutputExists(f"{path} exists; pass --overwrite to replace it")
    folder, name = os.path.split(path)
    if folder:
        tf.io.gfile.makedirs(folder)
    staging = os.path.join(folder, f".{name}.tmp")
    try:
        buffer = pa.BufferOutputStream()
        if fmt == "csv":
            pacsv.write_csv(table, buffer)
        else:
            pq.write_table(table, buffer)
        with tf.io.gfile.GFile(staging, "wb") as f:
            f.write(buffer.getvalue().to_pybytes())
        tf.io.gfile.rename(staging, path, overwrite=overwrite)
    finally:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.remove(staging)


def _read_scored(prefix: str) -> list[tf.train.Example]:
    files = tf.io.gfile.glob(prefix + "*")
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return [tf.train.Example.FromString(record.numpy()) for record in dataset]


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        predictions = artifact_utils.get_single_instance(output_dict[PREDICTIONS_KEY])
        output_path = exec_properties[OUTPUT_PATH_KEY]
        fmt = exec_properties[OUTPUT_FORMAT_KEY]
        keep = tuple(json.loads(exec_properties.get(KEEP_KEY) or "[]"))
        overwrite = bool(exec_properties.get(OVERWRITE_KEY, 0))
        if tf.io.gfile.exists(output_path) and not overwrite:
            raise OutputExists(f"{output_path} exists; pass --overwrite to replace it")
        model_dir = model.get_string_custom_property(PUSHED_DESTINATION)

        rows_in = 0
        staging = os.path.join(predictions.uri, STAGING)
        for split in artifact_utils.decode_split_names(examples.split_names):
            pattern = os.path.join(artifact_utils.get_split_uri([examples], split), "*")
            rows_in += count_records(tf.io.gfile.glob(pattern), "GZIP")
            with self._make_beam_pipeline() as pipeline:
                score(pipeline, pattern, model_dir, keep, f"{staging}/{split}")
        scored = _read_scored(staging + "/")
        rows_out = len(scored)
        if rows_out != rows_in:
            raise RowCountMismatch(f"row counts disagree: {rows_in} rows in, {rows_out} scored")
        table = examples_to_table(scored, keep, output_names(model_dir))
        write_table(table, output_path, fmt, overwrite)
        tf.io.gfile.rmtree(staging)
        predictions.set_string_custom_property(OUTPUT_PATH_KEY, output_path)
        predictions.set_string_custom_property(OUTPUT_FORMAT_KEY, fmt)
        predictions.set_int_custom_property(PUSHED_VERSION,
                                            model.get_int_custom_property(PUSHED_VERSION))
        predictions.set_int_custom_property(ROWS_IN, rows_in)
        predictions.set_int_custom_property(ROWS_OUT, table.num_rows)
        logging.info("Scored %d rows with %s into %s", rows_out, model_dir, output_path)
