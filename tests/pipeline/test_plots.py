"""Each picture on tiny inputs: the axes, their titles and the series a reader would see."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from skewless.pipeline import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _visible(picture):
    return [ax for ax in picture.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def test_picture_shows_as_png_in_jupyter_and_inline_in_html():
    picture = plots.training_curves({"loss": [1.0, 0.5]}, "auc")
    assert picture._repr_png_().startswith(PNG_MAGIC)
    tag = picture.img_tag()
    assert tag.startswith('<img alt="training" src="data:image/png;base64,')
    assert base64.b64decode(tag.split(",", 1)[1].rstrip('">')).startswith(PNG_MAGIC)


def test_feature_distributions_put_train_and_eval_on_the_same_axes_with_missing_and_empty():
    numeric = plots.FeatureDistribution("trip_miles", {
        "train": plots.SplitDistribution(counts=(3, 1), edges=(0.0, 1.0, 2.0), empty=0.25),
        "eval": plots.SplitDistribution(counts=(1, 1), edges=(0.0, 1.5, 3.0), missing=0.5),
    })
    categorical = plots.FeatureDistribution("payment_type", {
        "train": plots.SplitDistribution(counts=(6, 2), labels=("Cash", "Card")),
        "eval": plots.SplitDistribution(counts=(1, 3), labels=("Card", "Cash")),
    })
    picture = plots.feature_distributions([numeric, categorical])
    first, second = _visible(picture)
    assert first.get_title().startswith("trip_miles")
    assert "train: missing 0%, empty 25%" in first.get_title()
    assert "eval: missing 50%, empty 0%" in first.get_title()
    stairs = [p for p in first.patches]
    assert len(stairs) == 2  # one histogram per split
    np.testing.assert_allclose(stairs[0].get_data().values, [0.75, 0.25])
    np.testing.assert_allclose(stairs[1].get_data().edges, [0.0, 1.5, 3.0])
    assert [t.get_text() for t in second.get_legend().get_texts()] == ["train", "eval"]
    assert [t.get_text() for t in second.get_yticklabels()] == ["Cash", "Card"]
    widths = [bar.get_width() for bar in second.patches]
    np.testing.assert_allclose(widths, [0.75, 0.25, 0.75, 0.25])  # eval shares in train's order


def test_training_curves_show_loss_and_the_task_metric_train_against_validation():
    history = {"loss": [0.9, 0.6, 0.5], "val_loss": [1.0, 0.7, 0.65],
               "mae": [30.0, 20.0, 15.0], "val_mae": [31.0, 22.0, 18.0]}
    loss, metric = _visible(plots.training_curves(history, "mae"))
    assert (loss.get_title(), metric.get_title()) == ("loss", "mae")
    lines = {line.get_label(): list(line.get_ydata()) for line in metric.get_lines()}
    assert lines == {"train": [30.0, 20.0, 15.0], "validation": [31.0, 22.0, 18.0]}
    assert list(loss.get_lines()[0].get_xdata()) == [1, 2, 3]


def test_binary_evaluation_draws_roc_pr_and_calibration():
    curve = plots.ThresholdCurve(thresholds=(0.0, 0.5, 1.0), tp=(5, 4, 0), fp=(5, 1, 0),
                                 tn=(0, 4, 5), fn=(0, 1, 5))
    calibration = plots.CalibrationBuckets(predicted=(0.1, 0.8), actual=(0.2, 0.7),
                                           weight=(10, 5))
    roc, pr, cal = _visible(plots.binary_evaluation(curve, calibration))
    assert [roc.get_title(), pr.get_title(), cal.get_title()] == [
        "ROC", "precision-recall", "calibration"]
    model = roc.get_lines()[0]
    np.testing.assert_allclose(model.get_xdata(), [0.0, 0.2, 1.0])
    np.testing.assert_allclose(model.get_ydata(), [0.0, 0.8, 1.0])
    assert model.get_label() == "model (AUC 0.800)"
    np.testing.assert_allclose(pr.get_lines()[0].get_ydata(), [0.5, 0.8])  # no predicted positive
    np.testing.assert_allclose(cal.collections[0].get_offsets(), [[0.1, 0.2], [0.8, 0.7]])


def test_confusion_matrix_writes_the_counts_actual_by_predicted():
    picture = plots.confusion_matrix([[5, 1, 0], [0, 4, 2], [0, 0, 6]], ("a", "b", "c"))
    [ax] = _visible(picture)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "actual")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    np.testing.assert_array_equal(ax.images[0].get_array(), [[5, 1, 0], [0, 4, 2], [0, 0, 6]])
    assert [t.get_text() for t in ax.texts][:3] == ["5", "1", "0"]


def test_regression_evaluation_draws_predicted_against_actual_and_residuals():
    versus, residuals = _visible(plots.regression_evaluation([10.0, 20.0, 33.0],
                                                             [12.0, 20.0, 30.0]))
    assert versus.get_title() == "predicted vs actual"
    np.testing.assert_allclose(versus.collections[0].get_offsets(),
                               [[12.0, 10.0], [20.0, 20.0], [30.0, 33.0]])
    assert residuals.get_title() == "residuals"
    np.testing.assert_allclose(residuals.collections[0].get_offsets()[:, 1], [2.0, 0.0, -3.0])


def test_metrics_by_slice_draws_a_bar_per_slice_and_the_threshold():
    metric = plots.SliceMetric("AUC", {"Overall": 0.8, "payment_type=Cash": 0.7},
                               lower_bound=0.75)
    [ax] = _visible(plots.metrics_by_slice([metric]))
    assert [bar.get_width() for bar in ax.patches] == pytest.approx([0.8, 0.7])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Overall", "payment_type=Cash"]
    [bound] = ax.get_lines()
    assert list(bound.get_xdata()) == [0.75, 0.75] and bound.get_label() == "lower bound 0.75"


def test_regression_figures_on_the_bundled_diabetes_labels():
    """The diabetes target (25 to 346) against a rough prediction: axes span the real range."""
    import csv

    from tests.conftest import REPO

    with (REPO / "data" / "diabetes" / "data.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["progression"] and r["bmi"]]
    actual = np.array([float(r["progression"]) for r in rows])
    bmi = np.array([float(r["bmi"]) for r in rows])
    slope, intercept = np.polyfit(bmi, actual, 1)
    predicted = slope * bmi + intercept
    versus, residuals = _visible(plots.regression_evaluation(predicted, actual))
    assert len(versus.collections[0].get_offsets()) == len(rows) > 400
    low, high = versus.get_xlim()
    assert low <= actual.min() and high >= actual.max()
    np.testing.assert_allclose(residuals.collections[0].get_offsets()[:, 1], actual - predicted)
    assert abs(np.mean(actual - predicted)) < 1e-6  # a least-squares fit: residuals centre on 0
