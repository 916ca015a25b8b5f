"""BatchInference's plain functions: model outputs to columns, the table, the atomic write."""

from __future__ import annotations

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from skewless.components.batch_inference.executor import (
    OutputExists,
    examples_to_table,
    prediction_features,
    write_table,
)


def _example(**features) -> tf.train.Example:
    example = tf.train.Example()
    for name, (kind, values) in features.items():
        getattr(example.features.feature[name], kind).value.extend(values)
    return example


def test_a_per_class_output_becomes_one_column_per_class():
    outputs = {
        "scores": np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], np.float32),
        "classes": np.array([[b"versicolor"], [b"setosa"]]),
        "class_ids": np.array([1, 0]),
    }
    row = prediction_features(outputs, 1)
    assert sorted(row) == ["class_ids", "classes", "scores_0", "scores_1", "scores_2"]
    assert list(row["classes"].bytes_list.value) == [b"setosa"]
    assert list(row["class_ids"].int64_list.value) == [0]
    assert list(row["scores_1"].float_list.value) == [0.25]


def test_table_keeps_column_order_types_and_missing_values():
    examples = [
        _example(fare=("float_list", [4.25]), company=("bytes_list", [b"Flash Cab"]),
                 trip_start_hour=("int64_list", [0]), probabilities=("float_list", [0.5]),
                 scores_0=("float_list", [0.5])),
        _example(fare=("float_list", []), company=("bytes_list", []),
                 trip_start_hour=("int64_list", [23]), probabilities=("float_list", [0.75]),
                 scores_0=("float_list", [0.75])),
    ]
    table = examples_to_table(examples, (), ["probabilities", "scores"])
    assert table.column_names == ["company", "fare", "trip_start_hour", "probabilities",
                                  "scores_0"]
    assert table.column("fare").to_pylist() == [4.25, None]
    assert table.column("company").to_pylist() == ["Flash Cab", None]
    assert table.column("trip_start_hour").to_pylist() == [0, 23]  # a zero is a value
    kept = examples_to_table(examples, ("trip_start_hour", "fare"), ["probabilities", "scores"])
    assert kept.column_names == ["trip_start_hour", "fare", "probabilities", "scores_0"]


def test_write_is_atomic_and_refuses_an_existing_file(tmp_path):
    table = examples_to_table([_example(fare=("float_list", [1.5]))], (), [])
    parquet, csv = tmp_path / "p.parquet", tmp_path / "out" / "p.csv"
    write_table(table, str(parquet), "parquet", overwrite=False)
    write_table(table, str(csv), "csv", overwrite=False)
    assert pq.read_table(parquet).column("fare").to_pylist() == [1.5]
    assert pacsv.read_csv(csv).column("fare").to_pylist() == [1.5]
    with pytest.raises(OutputExists, match="exists; pass --overwrite"):
        write_table(table, str(parquet), "parquet", overwrite=False)
    write_table(table, str(parquet), "parquet", overwrite=True)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out", "p.csv", "p.parquet"]
