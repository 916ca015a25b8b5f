"""Finding and counting the rows of the source data (light to import: TensorFlow on demand)."""

from __future__ import annotations

import csv
from pathlib import Path

FILE_ENDINGS = {"csv": (".csv",), "parquet": (".parquet",), "tfrecord": (".tfrecord", ".gz")}


def source_files(path: Path, fmt: str) -> list[Path]:
    """The files a data path stands for: the file itself, or the folder's own files of the format.

    Like ExampleGen's pattern (`*.csv` in the folder), subfolders are not searched.
    """
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(FILE_ENDINGS[fmt]))


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
    """Rows ExampleGen will read: CSV records after each header, Parquet rows, or tf.Examples."""
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
    return sum(count_records([f], "GZIP" if f.endswith(".gz") else None) for f in files)
