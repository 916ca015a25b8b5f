"""Static pictures of a run, drawn with matplotlib: they show offline, in a notebook or a report.

Every function takes plain values (no artifact, no proto) and returns a `Picture`, a matplotlib
figure that Jupyter shows as a PNG and the report embeds. `figures.py` reads the artifacts.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

# Train and eval keep the same colours in every picture.
SPLIT_COLORS = {"train": "#1f77b4", "eval": "#ff7f0e", "validation": "#ff7f0e",
                "training": "#1f77b4", "serving": "#d62728"}
COLUMNS = 3


class Picture(Figure):
    """A figure that Jupyter shows as a PNG without pyplot, and that an HTML page can inline."""

    def png(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        return buffer.getvalue()

    def _repr_png_(self) -> bytes:
        return self.png()

    def img_tag(self) -> str:
        """An <img> with the PNG inline (a data: URI), so a page needs no other file."""
        data = base64.b64encode(self.png()).decode("ascii")
        return f'<img alt="{self.get_label()}" src="data:image/png;base64,{data}">'


def _picture(name: str, panels: int, columns: int = COLUMNS, size=(4.2, 3.0)):
    """A Picture with `panels` axes on a grid; unused cells are hidden."""
    columns = max(1, min(columns, panels))
    rows = -(-panels // columns)
    picture = Picture(figsize=(size[0] * columns, size[1] * rows), layout="constrained")
    picture.set_label(name)
    axes = picture.subplots(rows, columns, squeeze=False).ravel()
    for unused in axes[panels:]:
        unused.set_visible(False)
    return picture, list(axes[:panels])


def _color(split: str) -> str:
    return SPLIT_COLORS.get(split, "#2ca02c")


# Statistics ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SplitDistribution:
    """One feature in one split: a numeric histogram (`edges`) or top values (`labels`).

    `counts` are examples per bucket or value; `missing` and `empty` are shares of the split's
    examples where the feature is absent, or present with no value (CsvExampleGen's empty cells).
    """

    counts: tuple[float, ...]
    edges: tuple[float, ...] = ()
    labels: tuple[str, ...] = ()
    missing: float = 0.0
    empty: float = 0.0


@dataclasses.dataclass(frozen=True)
class FeatureDistribution:
    name: str
    splits: Mapping[str, SplitDistribution]

    @property
    def numeric(self) -> bool:
        return any(s.edges for s in self.splits.values())


def feature_distributions(features: Sequence[FeatureDistribution], top_k: int = 10,
                          others: int = 0) -> Picture:
    """Per feature, train against eval on the same axes: a histogram of shares (numeric) or the
    top values' shares (categorical); the title gives each split's missing and empty share.

    A categorical panel shows the first split's top values, and up to `others` of the other
    splits' top values that the first split lacks (values a server never saw in training)."""
    picture, axes = _picture("statistics", len(features))
    for ax, feature in zip(axes, features, strict=True):
        if feature.numeric:
            for split, dist in feature.splits.items():
                total = sum(dist.counts) or 1.0
                ax.stairs(np.asarray(dist.counts) / total, dist.edges, label=split,
                          color=_color(split), linewidth=1.5)
        else:
            first = next(iter(feature.splits.values()))
            shown = list(first.labels[:top_k])
            extra = [v for d in feature.splits.values() for v in d.labels if v not in shown]
            shown += list(dict.fromkeys(extra))[:others]
            width = 0.8 / max(1, len(feature.splits))
            for i, (split, dist) in enumerate(feature.splits.items()):
                total = sum(dist.counts) or 1.0
                share = dict(zip(dist.labels, np.asarray(dist.counts) / total, strict=True))
                ax.barh(np.arange(len(shown)) + i * width, [share.get(v, 0.0) for v in shown],
                        height=width, label=split, color=_color(split))
            ax.set_yticks(np.arange(len(shown)) + width * (len(feature.splits) - 1) / 2,
                          [_short(v) for v in shown], fontsize=7)
            ax.invert_yaxis()
        ax.set_xlabel("share of examples" if not feature.numeric else feature.name)
        ax.set_title(f"{feature.name}\n" + "  ".join(
            f"{split}: missing {d.missing:.0%}, empty {d.empty:.0%}"
            for split, d in feature.splits.items()), fontsize=8)
        ax.legend(fontsize=7)
    return picture


def _short(text: str, width: int = 18) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# Training --------------------------------------------------------------------------------------


def training_curves(history: Mapping[str, Sequence[float]], metric: str) -> Picture:
    """Loss and the task's metric per epoch, train against validation (`val_` in Keras history)."""
    picture, axes = _picture("training", 2, size=(4.8, 3.2))
    for ax, name in zip(axes, ("loss", metric), strict=True):
        for split, key in (("train", name), ("validation", f"val_{name}")):
            if key in history:
                values = list(history[key])
                ax.plot(range(1, len(values) + 1), values, marker="o", label=split,
                        color=_color(split))
        ax.set_xlabel("epoch")
        ax.set_title(name)
        if ax.get_lines():
            ax.legend(fontsize=8)
    return picture


# Evaluation ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ThresholdCurve:
    """Binary confusion counts at each decision threshold (TFMA's confusion_matrix_plot)."""

    thresholds: tuple[float, ...]
    tp: tuple[float, ...]
    fp: tuple[float, ...]
    tn: tuple[float, ...]
    fn: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class CalibrationBuckets:
    """Per bucket of predictions: mean prediction, mean label and weight (TFMA's calibration)."""

    predicted: tuple[float, ...]
    actual: tuple[float, ...]
    weight: tuple[float, ...]


def _ratio(a, b) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def binary_evaluation(curve: ThresholdCurve, calibration: CalibrationBuckets) -> Picture:
    """ROC and precision-recall curves, and a calibration plot (mean label per prediction bin)."""
    picture, (roc, pr, cal) = _picture("evaluation", 3)
    tpr = _ratio(curve.tp, np.add(curve.tp, curve.fn))
    fpr = _ratio(curve.fp, np.add(curve.fp, curve.tn))
    order = np.argsort(fpr, kind="stable")
    area = float(np.trapz(tpr[order], fpr[order]))
    roc.plot(fpr[order], tpr[order], label=f"model (AUC {area:.3f})")
    roc.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    predicted_positive = np.add(curve.tp, curve.fp)
    keep = predicted_positive > 0
    precision = _ratio(curve.tp, predicted_positive)
    pr.plot(tpr[keep], precision[keep], label="model")
    pr.set(xlabel="recall", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
    _calibration(cal, calibration, "mean label (fraction positive)")
    cal.set(xlim=(0, 1), ylim=(0, 1))
    for ax in (roc, pr):
        ax.legend(fontsize=8)
    return picture


def _calibration(ax, buckets: CalibrationBuckets, ylabel: str) -> None:
    weight = np.asarray(buckets.weight, float)
    sizes = 12 + 120 * weight / (weight.max() or 1.0)
    ax.scatter(buckets.predicted, buckets.actual, s=sizes, alpha=0.7, label="buckets")
    low = min(min(buckets.predicted, default=0), min(buckets.actual, default=0))
    high = max(max(buckets.predicted, default=1), max(buckets.actual, default=1))
    ax.plot([low, high], [low, high], linestyle="--", color="grey", label="perfect")
    ax.set(xlabel="mean prediction", ylabel=ylabel, title="calibration")
    ax.legend(fontsize=8)


def confusion_matrix(matrix: Sequence[Sequence[float]], classes: Sequence[str]) -> Picture:
    """Counts of actual (rows) against predicted (columns) classes, with the counts written in."""
    picture, [ax] = _picture("evaluation", 1, size=(1.2 * len(classes) + 2.5,
                                                     1.0 * len(classes) + 2))
    values = np.asarray(matrix, float)
    image = ax.imshow(values, cmap="Blues")
    picture.colorbar(image, ax=ax)
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right")
    ax.set_yticks(ticks, classes)
    ax.set(xlabel="predicted", ylabel="actual", title="confusion matrix")
    middle = values.max() / 2 if values.size else 0
    for (row, column), count in np.ndenumerate(values):
        ax.text(column, row, f"{count:g}", ha="center", va="center",
                color="white" if count > middle else "black")
    return picture


def regression_evaluation(predicted: Sequence[float], actual: Sequence[float]) -> Picture:
    """Predicted against actual (with the line where they are equal), and residuals
    (actual - predicted) against predicted, one point per example."""
    picture, (versus, residuals) = _picture("evaluation", 2, size=(4.8, 3.6))
    predicted, actual = np.asarray(predicted, float), np.asarray(actual, float)
    versus.scatter(actual, predicted, s=10, alpha=0.6, label="examples")
    low = float(min(predicted.min(initial=0), actual.min(initial=0)))
    high = float(max(predicted.max(initial=1), actual.max(initial=1)))
    versus.plot([low, high], [low, high], linestyle="--", color="grey", label="predicted = actual")
    versus.set(xlabel="actual", ylabel="predicted", title="predicted vs actual")
    versus.legend(fontsize=8)
    residuals.scatter(predicted, actual - predicted, s=10, alpha=0.6, label="examples")
    residuals.axhline(0.0, linestyle="--", color="grey")
    residuals.set(xlabel="predicted", ylabel="residual (actual - predicted)", title="residuals")
    residuals.legend(fontsize=8)
    return picture


@dataclasses.dataclass(frozen=True)
class SliceMetric:
    """One metric on each slice, with the threshold the blessing checks (if any)."""

    metric: str
    values: Mapping[str, float]
    lower_bound: float | None = None
    upper_bound: float | None = None


def metrics_by_slice(metrics: Sequence[SliceMetric]) -> Picture:
    """A bar per slice for each metric, with its lower and upper bounds drawn as lines."""
    picture, axes = _picture("slices", len(metrics), columns=2, size=(5.5, 3.4))
    for ax, metric in zip(axes, metrics, strict=True):
        names = list(metric.values)
        ax.barh(range(len(names)), list(metric.values.values()), color="#90a4ae")
        ax.set_yticks(range(len(names)), [_short(n, 28) for n in names], fontsize=7)
        ax.invert_yaxis()
        for bound, label in ((metric.lower_bound, "lower bound"),
                             (metric.upper_bound, "upper bound")):
            if bound is not None:
                ax.axvline(bound, color="#d62728", linestyle="--", label=f"{label} {bound:g}")
        ax.set(title=metric.metric, xlabel=metric.metric)
        if metric.lower_bound is not None or metric.upper_bound is not None:
            ax.legend(fontsize=8)
    return picture
