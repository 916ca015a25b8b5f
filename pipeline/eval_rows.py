"""Raw feature rows from the eval split of the latest ExampleGen output, to send to a server."""

from __future__ import annotations

import os
from typing import Any

from skewless.pipeline.config import ConfigError
from skewless.pipeline.run_config import PipelineConfig


def example_to_row(example, names: tuple[str, ...]) -> dict[str, Any] | None:
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


def eval_rows(config: PipelineConfig, limit: int = 1000) -> list[dict[str, Any]]:
    """Up to ``limit`` complete rows of the eval split, with the config's raw features.

    Raises:
        ConfigError: No ExampleGen output yet, or no complete row in its eval split.
    """
    import tensorflow as tf

    from skewless.pipeline.build import EXAMPLE_GEN
    from skewless.pipeline.store import connect, latest_output

    source = config.source or "the config"
    try:
        store = connect(config)
        artifact = latest_output(store, config.pipeline.name, EXAMPLE_GEN, "Examples")
    except Exception:  # noqa: BLE001 - any MLMD failure means: no run to read from
        artifact = None
    if artifact is None:
        raise ConfigError(f"{source}: no ExampleGen output yet; run `skewless run --config "
                          f"{source}` first, or give --rows")
    files = sorted(tf.io.gfile.glob(os.path.join(artifact.uri, "Split-eval", "*")))
    names = config.features.raw_names
    rows = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        row = example_to_row(tf.train.Example.FromString(record.numpy()), names)
        if row is not None:
            rows.append(row)
            if len(rows) >= limit:
                break
    if not rows:
        raise ConfigError(f"{source}: the eval split under {artifact.uri} has no row with every "
                          f"feature of the config")
    return rows
