"""Row counts: the source, ExampleGen's output and the statistics must agree."""

from __future__ import annotations

import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import statistics_pb2

from skewless.components.data_formats import count_source_rows
from skewless.components.row_count_check.executor import (
    RowCountMismatch,
    check_counts,
    count_statistics_at,
)


def test_csv_rows_are_records_not_lines(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text('a,b\n1,"two\nlines"\n3,x\n')
    assert count_source_rows(str(tmp_path), "data.csv", "csv") == 2


def test_only_the_files_example_gen_reads_are_counted(tmp_path):
    (tmp_path / "part1.csv").write_text("a\n1\n2\n")
    (tmp_path / "part2.csv").write_text("a\n3\n")
    (tmp_path / "notes.txt").write_text("not data\n")
    (tmp_path / "old").mkdir()  # ExampleGen's pattern does not descend into folders
    (tmp_path / "old" / "part0.csv").write_text("a\n9\n9\n9\n")
    assert count_source_rows(str(tmp_path), "*.csv", "csv") == 3


def test_tfrecord_and_parquet_counts(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tf.io.TFRecordWriter(str(tmp_path / "x.tfrecord")) as writer:
        for _ in range(7):
            writer.write(tf.train.Example().SerializeToString())
    assert count_source_rows(str(tmp_path), "x.tfrecord", "tfrecord") == 7
    pq.write_table(pa.table({"a": list(range(11))}), tmp_path / "x.parquet")
    assert count_source_rows(str(tmp_path), "*.parquet", "parquet") == 11


def test_statistics_counts_per_split(tmp_path):
    for split, n in (("train", 80), ("eval", 20)):
        folder = tmp_path / f"Split-{split}"
        folder.mkdir()
        stats = statistics_pb2.DatasetFeatureStatisticsList(
            datasets=[statistics_pb2.DatasetFeatureStatistics(num_examples=n)]
        )
        (folder / "FeatureStats.pb").write_bytes(stats.SerializeToString())
    assert count_statistics_at(str(tmp_path), ["train", "eval"]) == {"train": 80, "eval": 20}


def test_agreeing_counts_pass():
    check_counts(100, {"train": 80, "eval": 20}, {"train": 80, "eval": 20})


def test_a_lost_row_fails_the_run_with_all_three_numbers():
    # What STACK.md saw in Beam's multi_processing mode: 1% of rows silently gone.
    with pytest.raises(RowCountMismatch) as caught:
        check_counts(1000, {"train": 792, "eval": 198}, {"train": 792, "eval": 198})
    message = str(caught.value)
    assert "source 1000" in message and "ExampleGen 990" in message and "statistics 990" in message
