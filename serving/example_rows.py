"""Raw feature rows read from tf.Examples: what a client sends, built from a data split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def example_to_row(example, names: Sequence[str]) -> dict[str, Any] | None:
    """A tf.train.Example as one raw value per feature; None when a feature is missing."""
    row: dict[str, Any] = {}
    for name in names:
        feature = example.features.feature.get(name)
        if feature is None:
            return None
        kind = feature.WhichOneof("kind")
        values = getattr(feature, kind).value if kind else []
        if not values:
            return None
        value = values[0]
        row[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return row


def complete_rows(files: Sequence[str], names: Sequence[str], limit: int,
                  compression_type: str = "GZIP") -> list[dict[str, Any]]:
    """Up to ``limit`` rows that have every feature in ``names``, from TFRecord files of
    tf.Examples (ExampleGen's split files are GZIP-compressed)."""
    import tensorflow as tf

    rows = []
    for record in tf.data.TFRecordDataset(list(files), compression_type=compression_type):
        row = example_to_row(tf.train.Example.FromString(record.numpy()), names)
        if row is not None:
            rows.append(row)
            if len(rows) >= limit:
                break
    return rows
