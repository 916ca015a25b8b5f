"""Parquet, TFRecord and Avro copies of a sample go through ExampleGen and StatisticsGen as CSV
does."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import statistics_pb2

from skewless.pipeline import build
from skewless.pipeline.config import load_config
from skewless.pipeline.runner import run_pipeline
from skewless.pipeline.store import connect, latest_output
from tests.conftest import sample_config_dict, write_config, write_sample
from tests.pipeline.helpers import skewless, states, write_avro

pytestmark = pytest.mark.e2e

ROWS = 300


def _table(csv_path: Path) -> pa.Table:
    # Empty CSV cells are missing values, for strings too (as CsvExampleGen reads them).
    options = pacsv.ConvertOptions(strings_can_be_null=True)
    return pacsv.read_csv(csv_path, convert_options=options)


def _write_tfrecord(table: pa.Table, path: Path) -> None:
    """The same rows as tf.Examples, as a team's own TFRecord export would hold them."""
    from skewless.components.parquet_example_gen.executor import table_to_examples

    with tf.io.TFRecordWriter(str(path)) as writer:
        for example in table_to_examples(table):
            writer.write(example.SerializeToString())


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    csv_path = write_sample(root / "csv" / "data.csv", ROWS)
    table = _table(csv_path)
    (root / "parquet").mkdir()
    pq.write_table(table, root / "parquet" / "data.parquet")
    (root / "tfrecord").mkdir()
    _write_tfrecord(table, root / "tfrecord" / "data.tfrecord")
    (root / "avro").mkdir()
    write_avro(table, root / "avro" / "data.avro")
    return {"csv": csv_path, "parquet": root / "parquet", "tfrecord": root / "tfrecord",
            "avro": root / "avro"}


def _statistics(
    fmt: str, data: Path, workdir: Path
) -> dict[str, statistics_pb2.DatasetFeatureStatistics]:
    raw = sample_config_dict(workdir / fmt, data, data={"format": fmt})
    config = load_config(write_config(workdir / fmt / "cfg.yaml", raw))
    events = []
    run_pipeline(config, events.append, stop_after_schema=True)
    assert [e.state for e in events if e.state] == ["executed"] * 3
    store = connect(config)
    artifact = latest_output(store, config.pipeline.name, build.STATISTICS_GEN, "ExampleStatistics")
    out = {}
    for split in ("train", "eval"):
        blob = tf.io.gfile.GFile(f"{artifact.uri}/Split-{split}/FeatureStats.pb", "rb").read()
        out[split] = statistics_pb2.DatasetFeatureStatisticsList.FromString(blob).datasets[0]
    return out


def _combined(splits: dict[str, statistics_pb2.DatasetFeatureStatistics]) -> dict:
    """Whole-dataset statistics from the per-split ones.

    ExampleGen assigns rows to splits by hashing the serialized tf.Example, whose bytes depend on
    the source format's encoder, so the same rows may fall into different splits; the dataset as a
    whole is what must not change.
    """
    total = sum(s.num_examples for s in splits.values())
    summary: dict = {"num_examples": total}
    names = {f.path.step[0] for s in splits.values() for f in s.features}
    for name in sorted(names):
        parts = [f for s in splits.values() for f in s.features if f.path.step[0] == name]
        if parts[0].HasField("num_stats"):
            n = [p.num_stats.common_stats.tot_num_values for p in parts]
            count = sum(n)
            mean = sum(k * p.num_stats.mean for k, p in zip(n, parts, strict=True)) / count
            square = sum(k * (p.num_stats.std_dev**2 + p.num_stats.mean**2)
                         for k, p in zip(n, parts, strict=True)) / count
            variance = max(square - mean**2, 0)
            summary[name] = ("num", count, float(f"{mean:.6g}"), float(f"{variance:.4g}"),
                             min(p.num_stats.min for p in parts),
                             max(p.num_stats.max for p in parts),
                             sum(p.num_stats.num_zeros for p in parts))
        else:
            summary[name] = ("str", sum(p.string_stats.common_stats.num_non_missing
                                        for p in parts))
    return summary


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord", "avro"])
def test_same_rows_and_statistics_as_csv(fmt, datasets, tmp_path_factory, tf_tmpdir):
    workdir = tmp_path_factory.mktemp(f"run-{fmt}")
    expected = _combined(_statistics("csv", datasets["csv"], workdir))
    actual = _combined(_statistics(fmt, datasets[fmt], workdir))
    assert actual["num_examples"] == expected["num_examples"] == ROWS
    assert actual == expected
    # Zeros are values, not missing values (TFX 1.16's own Parquet reader drops them).
    assert actual["trip_start_hour"][6] > 0 and actual["fare"][6] > 0


def test_avro_columns_values_and_row_count(datasets):
    """What the config check and RowCountCheck read of an Avro file: zeros are values."""
    from skewless.components import data_formats

    folder = datasets["avro"]
    assert data_formats.columns(folder, "avro") == data_formats.columns(datasets["csv"], "csv")
    hours = data_formats.column_values(folder, "avro", "trip_start_hour")
    assert hours == data_formats.column_values(datasets["csv"], "csv", "trip_start_hour")
    assert 0 in hours
    assert data_formats.count_source_rows(str(folder), "*.avro", "avro") == ROWS


def test_training_on_the_avro_copy_counts_the_same_rows(datasets, tmp_path_factory):
    """A whole `skewless run` on Avro: RowCountCheck finds the source's rows in ExampleGen's
    output and the statistics, and the Trainer trains on them."""
    workdir = tmp_path_factory.mktemp("train-avro")
    raw = sample_config_dict(workdir, datasets["avro"], data={"format": "avro"},
                             model={"train_steps": 5, "eval_steps": 2})
    result = skewless("run", "--config", str(write_config(workdir / "cfg.yaml", raw)),
                      tmpdir=workdir / "tmp")
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    assert f"rows: {ROWS} (source, ExampleGen and statistics agree)" in result.stdout
    assert states(result.stdout)[build.TRAINER] == "executed"
