"""The eval config asks TFMA for the plots each task's figures draw."""

from __future__ import annotations

import pytest

from skewless.pipeline import build
from skewless.pipeline.config import check_references, load_config
from tests.conftest import DIABETES_CONFIG, IRIS_CONFIG, TAXI_CONFIG


def _plot_classes(path) -> list[str]:
    config, _ = check_references(load_config(path, check_data=False))
    return [m.class_name for spec in build.eval_config(config).metrics_specs
            for m in spec.metrics if m.class_name.endswith("Plot")]


@pytest.mark.parametrize(("path", "expected"), [
    (TAXI_CONFIG, ["ConfusionMatrixPlot", "CalibrationPlot"]),
    (IRIS_CONFIG, ["MultiClassConfusionMatrixPlot"]),
    (DIABETES_CONFIG, []),  # its figures plot the model's own predictions
], ids=["binary", "multiclass", "regression"])
def test_eval_config_asks_for_the_tasks_plots(path, expected):
    assert _plot_classes(path) == expected
