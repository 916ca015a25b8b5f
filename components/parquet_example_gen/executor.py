"""Parquet to tf.Example that keeps zeros and writes missing values as CsvExampleGen does.

TFX 1.16's parquet executor converts rows with `example_gen.utils.dict_to_example`, which tests
`if not value:` and so turns every 0, 0.0 and "" into a missing value. Here only a null is missing,
and it becomes an empty list of the column's type, as CsvExampleGen writes an empty cell: the same
table gives the same examples and statistics from CSV and from Parquet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
import tensorflow as tf
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor


def _kind(arrow_type: pa.DataType) -> str | None:
    if pa.types.is_null(arrow_type):
        return None  # a column with no value at all: CsvExampleGen gives it no type either
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_integer(arrow_type) or pa.types.is_boolean(arrow_type):
        return "int64_list"
    if pa.types.is_floating(arrow_type):
        return "float_list"
    return "bytes_list"


def feature(kind: str | None, value: Any) -> tf.train.Feature:
    """A tf.Example feature of one cell: int64_list, float_list, bytes_list or (no kind) empty."""
    values = [] if value is None else list(value) if isinstance(value, list) else [value]
    values = [v for v in values if v is not None]
    if kind is None:
        return tf.train.Feature()
    if kind == "int64_list":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
    if kind == "float_list":
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    encoded = [v if isinstance(v, bytes) else str(v).encode() for v in values]
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=encoded))


def table_to_examples(table: pa.Table) -> Iterator[tf.train.Example]:
    """One tf.Example per row of an Arrow table; a null is an empty list of the column's type."""
    kinds = {field.name: _kind(field.type) for field in table.schema}
    for row in table.to_pylist():
        features = {name: feature(kinds[name], value) for name, value in row.items()}
        yield tf.train.Example(features=tf.train.Features(feature=features))


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _ParquetToExample(pipeline, exec_properties: dict[str, Any], split_pattern: str):  # noqa: N802
    pattern = os.path.join(exec_properties["input_base"], split_pattern)
    return (
        pipeline
        | "ReadFromParquet" >> beam.io.ReadFromParquetBatched(pattern)
        | "ToTFExample" >> beam.FlatMap(table_to_examples)
    )


class Executor(BaseExampleGenExecutor):
    """Generic ExampleGen executor for Parquet files."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _ParquetToExample
