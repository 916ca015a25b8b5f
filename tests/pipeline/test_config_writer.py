"""Editing the config YAML in place: comments kept, invalid edits refused with the file intact."""

from __future__ import annotations

import shutil

import pytest

from skewless.pipeline.config import ConfigError
from skewless.pipeline.config_writer import update_config
from tests.conftest import TAXI_CONFIG


def test_an_update_keeps_every_comment_and_other_line(tmp_path):
    path = tmp_path / "taxi.yaml"
    shutil.copy(TAXI_CONFIG, path)
    before = path.read_text().splitlines()
    config = update_config(path, {"deployment": {"replicas": {"max": 9,
                                                              "target_cpu_utilization": 41}}})
    assert (config.deployment.replicas.max, config.deployment.replicas.target_cpu_utilization) == (
        9, 41)
    after = path.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed == [("  replicas: {min: 1, max: 4, target_cpu_utilization: 70}",
                        "  replicas: {min: 1, max: 9, target_cpu_utilization: 41}")]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"deployment": {"replicas": {"max": 0}}}, "deployment.replicas.max"),
        ({"deployment": {"replicas": {"target_cpu_utilization": None}}},
         "give target_cpu_utilization or target_requests_per_second"),
        ({"deployment": {"cpu": {"batching": {"num_batch_threads": 64}}}},
         "threads exceed the CPU limit"),
    ],
    ids=["below-one", "no-target", "threads"],
)
def test_an_invalid_update_names_the_key_and_leaves_the_file(tmp_path, changes, message):
    path = tmp_path / "taxi.yaml"
    shutil.copy(TAXI_CONFIG, path)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=message) as error:
        update_config(path, changes)
    assert "\n" not in str(error.value)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["taxi.yaml"]
