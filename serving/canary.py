"""Two version labels of one served model on the same rows: how far the candidate strays.

Each row is sent as its own Predict request to the baseline label and to the candidate label
(gRPC `ModelSpec.version_label`, or REST `/v1/models/M/labels/L`), so that it works against
skewless's server and TF Serving alike, and each label's latency is that of single requests.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from skewless.serving.loadtest import percentile_ms


@dataclass(frozen=True)
class LabelAnswers:
    """A label's answers to every row (outputs stacked along rows) and each request's seconds."""

    label: str
    outputs: dict[str, np.ndarray]
    seconds: tuple[float, ...]

    def latency_ms(self) -> dict[str, float | None]:
        return {"p50": percentile_ms(self.seconds, 50), "p99": percentile_ms(self.seconds, 99)}


def replay(client, model: str, label: str, rows: Sequence[Mapping[str, Any]]) -> LabelAnswers:
    """Sends each row to `label` of `model` as one Predict request.

    Raises:
        ServingError: The server's error for the first request that failed.
    """
    answers: list[dict[str, np.ndarray]] = []
    seconds = []
    for row in rows:
        started = time.perf_counter()
        answers.append(client.predict(model, [row], label=label))
        seconds.append(time.perf_counter() - started)
    outputs = {name: np.concatenate([np.asarray(a[name]).reshape(1, -1) for a in answers])
               for name in answers[0]}
    return LabelAnswers(label, outputs, tuple(seconds))


@dataclass(frozen=True)
class RowDifference:
    """One row: its index in the replayed rows, both labels' values, how far apart they are."""

    index: int
    baseline: Any
    candidate: Any
    difference: float
    agrees: bool


@dataclass(frozen=True)
class Comparison:
    """How a candidate label answered the rows compared with the baseline label.

    `agreement` (the share of rows given the same class) is for classifiers, None for
    regressors; the differences are of `score_output` (probabilities, scores or predictions),
    the largest over a row's values.
    """

    rows: int
    score_output: str
    agreement: float | None
    mean_abs_difference: float
    max_abs_difference: float
    latency_ms: dict[str, dict[str, float | None]]
    most_different: tuple[RowDifference, ...]


def _plain(values: np.ndarray) -> Any:
    """A row's values as JSON-ready Python (one value unwrapped, bytes as text)."""
    items = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v.item()
             if isinstance(v, np.generic) else v for v in values.reshape(-1)]
    return items[0] if len(items) == 1 else items


def compare(
    baseline: LabelAnswers,
    candidate: LabelAnswers,
    score_output: str,
    class_output: str | None,
    top: int = 5,
) -> Comparison:
    """Agreement and differences of two labels' answers to the same rows.

    Args:
        baseline: The baseline label's answers.
        candidate: The candidate label's answers.
        score_output: The numeric output to measure differences on.
        class_output: The class output of a classifier, or None for a regressor.
        top: How many of the most different rows to keep.

    Raises:
        KeyError: An answer lacks `score_output` or `class_output`.
    """
    scores = baseline.outputs[score_output].astype(np.float64)
    other = candidate.outputs[score_output].astype(np.float64)
    differences = np.abs(scores - other).max(axis=1)
    if class_output is None:
        agrees = np.ones(len(differences), bool)
        shown_baseline, shown_candidate = scores, other
        agreement = None
    else:
        shown_baseline, shown_candidate = (baseline.outputs[class_output],
                                           candidate.outputs[class_output])
        agrees = np.array([a.tolist() == b.tolist()
                           for a, b in zip(shown_baseline, shown_candidate, strict=True)])
        agreement = float(agrees.mean())
    order = sorted(range(len(differences)), key=lambda i: (bool(agrees[i]), -differences[i]))
    most_different = tuple(
        RowDifference(i, _plain(shown_baseline[i]), _plain(shown_candidate[i]),
                      float(differences[i]), bool(agrees[i]))
        for i in order[:top]
    )
    return Comparison(
        rows=len(differences),
        score_output=score_output,
        agreement=agreement,
        mean_abs_difference=float(differences.mean()),
        max_abs_difference=float(differences.max()),
        latency_ms={baseline.label: baseline.latency_ms(),
                    candidate.label: candidate.latency_ms()},
        most_different=most_different,
    )


@dataclass(frozen=True)
class CanaryLimits:
    """How far a candidate may stray; None leaves a limit out."""

    min_agreement: float | None = None
    max_mean_abs_difference: float | None = None
    max_abs_difference: float | None = None
    max_p99_latency_ms: float | None = None


def limit_failures(comparison: Comparison, limits: CanaryLimits) -> list[str]:
    """One line per limit the comparison is past (none when the candidate may go on)."""
    failures = []
    if (comparison.agreement is not None and limits.min_agreement is not None
            and comparison.agreement < limits.min_agreement):
        failures.append(f"agreement {comparison.agreement:.4f} is below the minimum "
                        f"{limits.min_agreement:.4f}")
    if comparison.agreement is None:
        if (limits.max_mean_abs_difference is not None
                and comparison.mean_abs_difference > limits.max_mean_abs_difference):
            failures.append(f"mean absolute difference {comparison.mean_abs_difference:.6g} is "
                            f"above the maximum {limits.max_mean_abs_difference:g}")
        if (limits.max_abs_difference is not None
                and comparison.max_abs_difference > limits.max_abs_difference):
            failures.append(f"max absolute difference {comparison.max_abs_difference:.6g} is "
                            f"above the maximum {limits.max_abs_difference:g}")
    if limits.max_p99_latency_ms is not None:
        for label, latency in comparison.latency_ms.items():
            if latency["p99"] is not None and latency["p99"] > limits.max_p99_latency_ms:
                failures.append(f"label {label}: p99 latency {latency['p99']:.1f} ms is above "
                                f"the maximum {limits.max_p99_latency_ms:g} ms")
    return failures
