"""What skewless knows of its input formats, on tiny files of each format."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from skewless.components import data_formats

ROWS = [{"species": "setosa", "petal": 1.4, "count": 3},
        {"species": "", "petal": 4.7, "count": 5},
        {"species": "virginica", "petal": None, "count": 2}]


def _csv(folder: Path) -> Path:
    path = folder / "data.csv"
    path.write_text("species,petal,count\nsetosa,1.4,3\n,4.7,5\nvirginica,,2\n")
    return path


def _parquet(folder: Path) -> Path:
    path = folder / "data.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    return path


def _tfrecord(folder: Path) -> Path:
    path = folder / "data.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for row in ROWS:
            feature = {}
            if row["species"]:
                feature["species"] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[row["species"].encode()]))
            if row["petal"] is not None:
                feature["petal"] = tf.train.Feature(float_list=tf.train.FloatList(
                    value=[row["petal"]]))
            feature["count"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[row["count"]]))
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())
    return path


def _avro(folder: Path) -> Path:
    import fastavro

    path = folder / "data.avro"
    schema = {"type": "record", "name": "row", "fields": [
        {"name": "species", "type": ["null", "string"]},
        {"name": "petal", "type": ["null", "double"]},
        {"name": "count", "type": "long"}]}
    with path.open("wb") as out:
        fastavro.writer(out, fastavro.parse_schema(schema), ROWS)
    return path


WRITERS = {"csv": _csv, "parquet": _parquet, "tfrecord": _tfrecord, "avro": _avro}


@pytest.mark.parametrize("fmt", data_formats.FORMATS)
def test_columns_and_values_of_each_format(tmp_path, fmt):
    path = WRITERS[fmt](tmp_path)
    assert data_formats.columns(path, fmt) == {"species", "petal", "count"}
    assert data_formats.column_values(path, fmt, "species") == ["setosa", None, "virginica"]
    assert data_formats.column_values(path, fmt, "count") == [3, 5, 2]
    petal = data_formats.column_values(path, fmt, "petal")
    assert petal[:2] == pytest.approx([1.4, 4.7]) and petal[2] is None
    base, pattern = data_formats.input_location(path, fmt)
    assert data_formats.count_source_rows(base, pattern, fmt) == 3


def test_csv_columns_are_typed_as_csv_example_gen_types_them(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,c\n1,1.5,x\n2,2,7\n")
    assert data_formats.column_values(path, "csv", "a") == [1, 2]
    assert data_formats.column_values(path, "csv", "b") == [1.5, 2.0]
    assert data_formats.column_values(path, "csv", "c") == ["x", "7"]


def test_a_folder_stands_for_its_own_files_of_the_format(tmp_path):
    (tmp_path / "sub").mkdir()
    _csv(tmp_path / "sub")
    a = _csv(tmp_path)
    b = a.with_name("more.csv")
    b.write_text(a.read_text())
    (tmp_path / "notes.txt").write_text("x")
    assert data_formats.source_files(tmp_path, "csv") == [a, b]
    assert data_formats.input_location(tmp_path, "csv") == (str(tmp_path), "*.csv")
    assert data_formats.column_values(tmp_path, "csv", "count") == [3, 5, 2, 3, 5, 2]


def test_a_path_that_is_not_here_is_a_file_if_it_has_a_suffix(tmp_path):
    assert data_formats.input_location(tmp_path / "far" / "data.csv", "csv") == (
        str(tmp_path / "far"), "data.csv")
    assert data_formats.input_location(tmp_path / "far", "parquet") == (
        str(tmp_path / "far"), "*.parquet")


def test_unreadable_data_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "data.parquet"
    path.write_text("not parquet at all")
    with pytest.raises(ValueError) as caught:
        data_formats.columns(path, "parquet")
    assert str(caught.value).startswith(f"cannot read {path} as parquet: ")
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match=f"cannot read column 'x' of {path}: "):
        data_formats.column_values(path, "parquet", "x")
    with pytest.raises(ValueError, match="no csv files in"):
        data_formats.columns(tmp_path, "csv")
