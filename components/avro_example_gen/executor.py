"""Avro to tf.Example that keeps zeros and writes missing values as CsvExampleGen does.

TFX 1.16's Avro executor (`example_gen/custom_executors/avro_executor.py`) converts records with
`example_gen.utils.dict_to_example`, which tests `if not value:` and so turns every 0, 0.0, false
and "" into a missing value. Here only a null is missing, and it becomes an empty list of the
field's type (taken from the file's Avro schema), as CsvExampleGen writes an empty cell.
"""

from __future__ import annotations

import os
from typing import Any

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor

from skewless.components.data_formats import avro_field_kinds, matching_files
from skewless.components.parquet_example_gen.executor import feature


def record_to_example(record: dict[str, Any], kinds: dict[str, str | None]) -> tf.train.Example:
    """One tf.Example of an Avro record; a null is an empty list of the field's type."""
    features = {name: feature(kind, record.get(name)) for name, kind in kinds.items()}
    return tf.train.Example(features=tf.train.Features(feature=features))


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _AvroToExample(pipeline, exec_properties: dict[str, Any], split_pattern: str):  # noqa: N802
    pattern = os.path.join(exec_properties["input_base"], split_pattern)
    files = matching_files(exec_properties["input_base"], split_pattern)
    if not files:
        raise ValueError(f"no Avro files match {pattern}")
    kinds = avro_field_kinds(files[0])
    return (
        pipeline
        | "ReadFromAvro" >> beam.io.ReadFromAvro(pattern)
        | "ToTFExample" >> beam.Map(record_to_example, kinds)
    )


class Executor(BaseExampleGenExecutor):
    """Generic ExampleGen executor for Avro files."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _AvroToExample
