"""Comparing two labels' answers: agreement, differences, the rows that differ most, limits."""

from __future__ import annotations

import numpy as np

from skewless.serving.canary import CanaryLimits, LabelAnswers, compare, limit_failures


def _answers(label, seconds=(0.001, 0.002, 0.003, 0.004), **outputs):
    return LabelAnswers(label, {k: np.asarray(v).reshape(len(v), -1) for k, v in outputs.items()},
                        seconds)


def test_a_classifier_is_compared_on_classes_and_the_differing_rows_come_first():
    stable = _answers("stable", classes=[0, 1, 1, 0], probabilities=[0.1, 0.9, 0.6, 0.2])
    canary = _answers("canary", classes=[0, 1, 0, 0], probabilities=[0.1, 0.7, 0.4, 0.5])
    result = compare(stable, canary, "probabilities", "classes", top=3)
    assert result.rows == 4 and result.agreement == 0.75
    assert result.max_abs_difference == np.float64(0.3).item()
    assert abs(result.mean_abs_difference - 0.175) < 1e-9
    assert [(r.index, r.baseline, r.candidate, r.agrees) for r in result.most_different] == [
        (2, 1, 0, False), (3, 0, 0, True), (1, 1, 1, True)]
    assert set(result.latency_ms) == {"stable", "canary"}
    assert abs(result.latency_ms["stable"]["p50"] - 2.5) < 1e-9
    assert limit_failures(result, CanaryLimits(min_agreement=0.99)) == [
        "agreement 0.7500 is below the minimum 0.9900"]
    assert limit_failures(result, CanaryLimits(min_agreement=0.75)) == []


def test_multiclass_scores_differ_by_their_largest_class_difference():
    stable = _answers("a", classes=[b"x", b"y"], scores=[[0.5, 0.5], [0.2, 0.8]],
                      seconds=(0.001, 0.001))
    canary = _answers("b", classes=[b"x", b"y"], scores=[[0.6, 0.4], [0.2, 0.8]],
                      seconds=(0.001, 0.001))
    result = compare(stable, canary, "scores", "classes")
    assert result.agreement == 1.0
    assert result.most_different[0].baseline == "x"
    assert abs(result.max_abs_difference - 0.1) < 1e-6


def test_a_regressor_is_held_to_its_differences_and_latency_to_the_p99_limit():
    stable = _answers("stable", predictions=[1.0, 2.0, 3.0, 4.0])
    canary = _answers("canary", predictions=[1.0, 2.5, 3.0, 4.1], seconds=(0.2, 0.2, 0.2, 0.2))
    result = compare(stable, canary, "predictions", None)
    assert result.agreement is None
    assert [r.index for r in result.most_different][:2] == [1, 3]
    assert result.most_different[0].baseline == 2.0 and result.most_different[0].candidate == 2.5
    failures = limit_failures(result, CanaryLimits(min_agreement=0.99, max_mean_abs_difference=0.1,
                                                   max_abs_difference=0.4,
                                                   max_p99_latency_ms=100))
    assert failures == [
        "mean absolute difference 0.15 is above the maximum 0.1",
        "max absolute difference 0.5 is above the maximum 0.4",
        "label canary: p99 latency 200.0 ms is above the maximum 100 ms",
    ]
