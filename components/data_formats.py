"""Everything skewless knows of its input formats: which files a data path stands for, their
columns, a column's values and row counts (light to import: TensorFlow and pyarrow on demand).

The config check, the pipeline's ExampleGen input and RowCountCheck all read data through here.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

FORMATS = ("csv", "parquet", "tfrecord", "avro")
FILE_ENDINGS = {"csv": (".csv",), "parquet": (".parquet",), "tfrecord": (".tfrecord", ".gz"),
                "avro": (".avro",)}
# tf.Examples read for columns (a TFRecord file has no header) and at most for a column's values.
TFRECORD_COLUMN_SAMPLE = 100
TFRECORD_VALUE_SAMPLE = 100_000


def source_files(path: Path, fmt: str) -> list[Path]:
    """The files a data path stands for: the file itself, or the folder's own files of the format.

    Like ExampleGen's pattern (`*.csv` in the folder), subfolders are not searched.
    """
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(FILE_ENDINGS[fmt]))


def input_location(path: Path, fmt: str) -> tuple[str, str]:
    """ExampleGen's input_base and file pattern for a data path (a file, or a folder's files).

    A path that is not on this machine (compiling for a cluster) is a file if it has a suffix.
    """
    if path.is_file() or (not path.exists() and path.suffix):
        return str(path.parent), path.name
    files = source_files(path, fmt) if path.is_dir() else []
    suffix = files[0].suffix if files else FILE_ENDINGS[fmt][0]
    return str(path), f"*{suffix}"


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def columns(path: Path, fmt: str) -> set[str]:
    """The column names of the data, read from the first file's header or first records.

    Raises:
        ValueError: there is no file of the format, or the first one cannot be read as that format.
    """
    files = source_files(path, fmt)
    if not files:
        raise ValueError(
            f"no {fmt} files in {path} (ExampleGen reads the folder's own files, not subfolders)"
        )
    try:
        return _columns_of(files[0], fmt)
    except Exception as exc:  # noqa: BLE001 - pyarrow, TF and codecs each raise their own kind
        raise ValueError(f"cannot read {files[0]} as {fmt}: {_first_line(exc)}") from None


def _columns_of(first: Path, fmt: str) -> set[str]:
    if fmt == "csv":
        with first.open(newline="") as f:
            return set(next(csv.reader(f), []))
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return set(pq.read_schema(first).names)
    if fmt == "avro":
        return set(avro_field_kinds(str(first)))
    found: set[str] = set()
    for example in _examples(first, TFRECORD_COLUMN_SAMPLE):
        found.update(example.features.feature.keys())
    return found


def _examples(file: Path, limit: int):
    import tensorflow as tf

    compression = "GZIP" if file.name.endswith(".gz") else None
    for record in tf.data.TFRecordDataset(str(file), compression_type=compression).take(limit):
        yield tf.train.Example.FromString(record.numpy())


def column_values(path: Path, fmt: str, column: str) -> list[str | int | float | None]:
    """A column's values over every file, None where a value is missing or empty.

    CSV values are typed as CsvExampleGen types them: all integers, else all numbers, else text.
    For TFRecord, the first `TFRECORD_VALUE_SAMPLE` records of each file are read.

    Raises:
        ValueError: a file cannot be read as the format.
    """
    values: list = []
    for file in source_files(path, fmt):
        try:
            values += _values_of(file, fmt, column)
        except Exception as exc:  # noqa: BLE001 - as in `columns`
            reason = _first_line(exc)
            raise ValueError(f"cannot read column {column!r} of {file}: {reason}") from None
    return values


def _values_of(file: Path, fmt: str, column: str) -> list:
    if fmt == "csv":
        with file.open(newline="") as f:
            rows = csv.reader(f)
            index = next(rows, []).index(column)
            raw = [(row[index] if index < len(row) else "") or None for row in rows]
        return _typed(raw)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        cells = pq.read_table(file, columns=[column]).column(0).to_pylist()
        return [None if c is None or c == "" else c for c in cells]
    if fmt == "avro":
        return [None if v is None or v == "" else v
                for v in (record.get(column) for record in _avro_records(str(file)))]
    values = []
    for example in _examples(file, TFRECORD_VALUE_SAMPLE):
        feature = example.features.feature.get(column)
        kind = feature.WhichOneof("kind") if feature is not None else None
        listed = list(getattr(feature, kind).value) if kind else []
        value = listed[0] if listed else None
        values.append(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
    return values


def _typed(raw: list[str | None]) -> list[str | int | float | None]:
    """CSV cells as CsvExampleGen would type the column: int, else float, else str."""
    present = [v for v in raw if v is not None]
    for kind in (int, float):
        try:
            converted = {v: kind(v) for v in set(present)}
        except ValueError:
            continue
        return [None if v is None else converted[v] for v in raw]
    return raw


def count_records(files: list[str], compression: str | None) -> int:
    """Records in TFRecord files."""
    import tensorflow as tf

    dataset = tf.data.TFRecordDataset(files, compression_type=compression)
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def matching_files(input_base: str, pattern: str) -> list[str]:
    """The files ExampleGen reads: `pattern` in `input_base`, on any tf.io.gfile filesystem."""
    import tensorflow as tf

    return sorted(tf.io.gfile.glob(f"{input_base.rstrip('/')}/{pattern}"))


def count_source_rows(input_base: str, pattern: str, fmt: str) -> int:
    """Rows ExampleGen will read: CSV records after each header, Parquet rows, tf.Examples or
    Avro records."""
    import tensorflow as tf

    files = matching_files(input_base, pattern)
    if fmt == "csv":
        total = 0
        for file in files:
            with tf.io.gfile.GFile(file) as f:
                total += max(0, sum(1 for _ in csv.reader(f)) - 1)
        return total
    if fmt == "parquet":
        import pyarrow.fs
        import pyarrow.parquet as pq

        total = 0
        for file in files:
            filesystem, path = (
                pyarrow.fs.FileSystem.from_uri(file) if "://" in file else (None, file)
            )
            total += pq.read_metadata(path, filesystem=filesystem).num_rows
        return total
    if fmt == "avro":
        return sum(_count_avro(file) for file in files)
    return sum(count_records([f], "GZIP" if f.endswith(".gz") else None) for f in files)


def _avro_kind(avro_type: Any) -> str | None:
    """The tf.Example list kind of an Avro field type (a union with null: its other branch)."""
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        return _avro_kind(branches[0]) if branches else None
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "array":
            return _avro_kind(avro_type["items"])
        if avro_type.get("type") == "enum":
            return "bytes_list"
        return _avro_kind(avro_type.get("type"))
    return {"int": "int64_list", "long": "int64_list", "boolean": "int64_list",
            "float": "float_list", "double": "float_list", "null": None}.get(avro_type,
                                                                            "bytes_list")


def avro_field_kinds(file: str) -> dict[str, str | None]:
    """{field name: tf.Example list kind} from an Avro file's writer schema, in field order."""
    import fastavro
    import tensorflow as tf

    with tf.io.gfile.GFile(file, "rb") as f:
        schema = fastavro.reader(f).writer_schema
    return {field["name"]: _avro_kind(field["type"]) for field in schema["fields"]}


def _avro_records(file: str):
    import fastavro
    import tensorflow as tf

    with tf.io.gfile.GFile(file, "rb") as f:
        yield from fastavro.reader(f)


def _count_avro(file: str) -> int:
    """Records in an Avro file, from its block headers (no record is decoded)."""
    import fastavro
    import tensorflow as tf

    with tf.io.gfile.GFile(file, "rb") as f:
        return sum(block.num_records for block in fastavro.block_reader(f))
