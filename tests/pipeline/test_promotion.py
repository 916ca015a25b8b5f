"""Label history as stacks, and the model config a promotion writes (no pipeline run)."""

from __future__ import annotations

import datetime

import pytest
from google.protobuf import text_format

from skewless.pipeline.config import load_config
from skewless.pipeline.manifests import RegistryLabels, models_config
from skewless.pipeline.promotion import (
    PROMOTE,
    ROLLBACK,
    Promotion,
    PromotionError,
    _labels_of,
    check_label,
    label_stacks,
)
from tests.conftest import TAXI_CONFIG

NOW = datetime.datetime(2026, 11, 24)


def move(label: str, version: int, action: str = PROMOTE) -> Promotion:
    return Promotion(label, version, None, action, "me", NOW)


def test_a_rollback_undoes_the_last_promotion_and_not_the_one_before():
    moves = [move("stable", 1), move("stable", 2), move("stable", 3), move("canary", 4),
             move("stable", 2, ROLLBACK), move("stable", 1, ROLLBACK)]
    assert label_stacks(moves) == {"stable": [1], "canary": [4]}


def test_labelled_versions_their_rollback_targets_and_the_newest_stay_loaded():
    labels = _labels_of([move("stable", 1), move("stable", 2), move("stable", 3),
                         move("canary", 5)], newest_pushed=6)
    assert labels == RegistryLabels({"canary": 5, "stable": 3}, (2, 3, 5, 6))


@pytest.mark.parametrize("label", ["stable", "canary", "blue_2"])
def test_tf_serving_labels_are_accepted(label):
    assert check_label(label) == label


@pytest.mark.parametrize("label", ["can-ary", "", "a/b", "stable "])
def test_other_labels_are_refused_in_one_line(label):
    with pytest.raises(PromotionError, match=r"^invalid label .*\[a-zA-Z0-9_\]\+$"):
        check_label(label)


def test_registry_labels_make_the_policy_specific_over_the_loaded_versions():
    config = load_config(TAXI_CONFIG, check_data=False)
    plain = text_format.MessageToString(models_config(config, "/models/taxi"))
    assert "latest" in plain and "version_labels" not in plain
    labelled = models_config(config, "/models/taxi",
                             registry=RegistryLabels({"stable": 7}, (7, 9)))
    [model] = labelled.model_config_list.config
    assert list(model.model_version_policy.specific.versions) == [7, 9]
    assert dict(model.version_labels) == {"stable": 7}
