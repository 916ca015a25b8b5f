"""Raw feature rows from the eval split of the latest ExampleGen output, to send to a server."""

from __future__ import annotations

import os
from typing import Any

from skewless.pipeline.config import ConfigError
from skewless.pipeline.run_config import PipelineConfig
from skewless.serving.example_rows import complete_rows


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
    rows = complete_rows(files, config.features.raw_names, limit)
    if not rows:
        raise ConfigError(f"{source}: the eval split under {artifact.uri} has no row with every "
                          f"feature of the config")
    return rows
