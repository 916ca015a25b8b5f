"""Counts rows in the source, in ExampleGen's output and in the statistics; all must agree.

Beam's multi_processing mode has been seen to drop 1% of rows silently (shared/STACK.md), so a
run proves it kept every row rather than trusting it.
"""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf
from absl import logging
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx import types
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from skewless.components.data_formats import count_records, count_source_rows

EXAMPLES_KEY = "examples"
STATISTICS_KEY = "statistics"
INPUT_BASE_KEY = "input_base"
INPUT_PATTERN_KEY = "input_pattern"
FORMAT_KEY = "input_format"


class RowCountMismatch(RuntimeError):
    """Rows were lost or invented between the source and the statistics."""


def count_examples(examples: types.Artifact) -> dict[str, int]:
    """Records per split in an Examples artifact (gzipped TFRecords)."""
    counts = {}
    for split in artifact_utils.decode_split_names(examples.split_names):
        files = tf.io.gfile.glob(os.path.join(artifact_utils.get_split_uri([examples], split), "*"))
        counts[split] = count_records(files, "GZIP")
    return counts


def count_statistics(statistics: types.Artifact) -> dict[str, int]:
    """num_examples per split in an ExampleStatistics artifact."""
    splits = artifact_utils.decode_split_names(statistics.split_names)
    return count_statistics_at(statistics.uri, splits)


def count_statistics_at(uri: str, splits: list[str]) -> dict[str, int]:
    """num_examples per split in the statistics stored under `uri`."""
    counts = {}
    for split in splits:
        path = os.path.join(uri, f"Split-{split}", stats_artifact_utils.BINARY_PB_BASENAME)
        stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(
            tf.io.gfile.GFile(path, "rb").read()
        )
        counts[split] = int(stats.datasets[0].num_examples)
    return counts


def check_counts(source: int, examples: dict[str, int], statistics: dict[str, int]) -> None:
    """Raises RowCountMismatch unless all three counts agree."""
    if source == sum(examples.values()) == sum(statistics.values()):
        return
    raise RowCountMismatch(
        f"row counts disagree: source {source}, ExampleGen {sum(examples.values())} {examples}, "
        f"statistics {sum(statistics.values())} {statistics}"
    )


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        source = count_source_rows(
            exec_properties[INPUT_BASE_KEY],
            exec_properties[INPUT_PATTERN_KEY],
            exec_properties[FORMAT_KEY],
        )
        examples = count_examples(artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY]))
        statistics = count_statistics(
            artifact_utils.get_single_instance(input_dict[STATISTICS_KEY])
        )
        check_counts(source, examples, statistics)
        logging.info("Row counts agree: %d rows, splits %s", source, examples)
