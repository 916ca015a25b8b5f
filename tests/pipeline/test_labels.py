"""A label that does not fit its task is one line before any component runs; classes resolve."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from click.testing import CliRunner

from skewless.cli import main
from skewless.pipeline.config import ConfigError, load_config
from skewless.pipeline.labels import LabelError, profile_label
from tests.conftest import REPO, write_config

IRIS_CSV = REPO / "data" / "iris" / "data.csv"
DIABETES_CSV = REPO / "data" / "diabetes" / "data.csv"


def _config(tmp_path: Path, data: Path, label: dict, features: dict, **sections) -> Path:
    raw = {
        "pipeline": {"name": "labels", "output_dir": str(tmp_path / "out")},
        "data": {"path": str(data)},
        "label": label,
        "features": features,
        "serving": {"model_name": "m", "push_dir": str(tmp_path / "serving")},
        "metadata": {"sqlite": str(tmp_path / "out" / "metadata.sqlite")},
        **sections,
    }
    return write_config(tmp_path / "cfg.yaml", raw)


IRIS_FEATURES = {"numeric": {"names": ["sepal_length", "petal_length"]}}
DIABETES_FEATURES = {"numeric": {"names": ["age", "bmi"]}}


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def _edited_csv(tmp_path: Path, source: Path, edit) -> Path:
    """A copy of a CSV with `edit(row_index, row)` applied to each data row (a dict)."""
    with source.open(newline="") as f:
        rows = list(csv.DictReader(f))
    target = tmp_path / "data" / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for i, row in enumerate(rows):
            edited = edit(i, dict(row))
            if edited is not None:
                writer.writerow(edited)
    return target


# -- the checks themselves, on plain values --

def test_continuous_column_under_binary_suggests_regression():
    values = [0.5 + i / 7 for i in range(229)] + [None]
    with pytest.raises(LabelError) as caught:
        profile_label("progression", values, "binary")
    assert str(caught.value) == (
        "label.column: 'progression' has 229 distinct non-integer values; task binary expects "
        "two classes (did you mean task: regression?)")


def test_many_classes_under_binary_suggest_multiclass():
    with pytest.raises(LabelError, match=r"has 3 distinct values \('a', 'b', 'c'\); task binary "
                       r"expects two classes \(did you mean task: multiclass\?\)"):
        profile_label("y", ["a", "b", "c", "a"], "binary")


def test_two_values_other_than_0_and_1_need_positive():
    with pytest.raises(LabelError, match="holds 'no' and 'yes', not 0 and 1; name the positive "
                                         "class with label.positive"):
        profile_label("y", ["no", "yes"], "binary")
    profile = profile_label("y", ["no", "yes", None], "binary", positive="yes")
    assert profile.classes == ("no", "yes") and profile.missing == 1


def test_positive_that_is_not_a_value():
    with pytest.raises(LabelError, match="label.positive: 'maybe' is not a value of column 'y' "
                                         r"\(it has 'no' and 'yes'\)"):
        profile_label("y", ["no", "yes"], "binary", positive="maybe")


def test_single_class_is_refused_for_classifiers():
    for task in ("binary", "multiclass"):
        with pytest.raises(LabelError, match="has a single class, 'setosa'; a classifier"):
            profile_label("species", ["setosa", "setosa", None], task)


def test_text_under_regression_suggests_multiclass():
    with pytest.raises(LabelError, match="has text values such as 'setosa', 'versicolor'; task "
                                         r"regression expects numbers \(did you mean task: "
                                         r"multiclass\?\)"):
        profile_label("species", ["setosa", "versicolor", 1.5], "regression")


def test_fractional_values_under_multiclass_suggest_regression():
    with pytest.raises(LabelError, match=r"has 2 distinct non-integer values; task multiclass "
                                         r"expects class labels \(did you mean task: regression"):
        profile_label("y", [1.5, 2.5, 3.0], "multiclass")


def test_too_many_integer_classes_suggest_regression():
    with pytest.raises(LabelError, match=r"has 214 distinct values, more than 100 classes"):
        profile_label("y", list(range(214)), "multiclass")


def test_all_missing_label():
    with pytest.raises(LabelError, match=r"has no values \(all 3 rows are missing\)"):
        profile_label("y", [None, None, float("nan")], "regression")


def test_integer_classes_sort_numerically():
    assert profile_label("y", [10, 2, 1, 2], "multiclass").classes == ("1", "2", "10")


# -- through the config, before any component runs --

def test_iris_classes_come_sorted_from_the_data(tmp_path):
    config = load_config(_config(tmp_path, IRIS_CSV, {"name": "species", "task": "multiclass",
                                                      "column": "species"}, IRIS_FEATURES))
    assert config.label.classes == ("setosa", "versicolor", "virginica")
    assert config.task.classes == ("setosa", "versicolor", "virginica")


def test_listed_class_absent_from_the_data(tmp_path):
    label = {"name": "species", "task": "multiclass", "column": "species",
             "classes": ["setosa", "versicolor", "virginica", "rosa"]}
    message = _error(_config(tmp_path, IRIS_CSV, label, IRIS_FEATURES))
    assert message.endswith("label.classes: 'rosa' never occurs in column 'species' (it has "
                            "'setosa', 'versicolor', 'virginica')")


def test_data_class_not_listed(tmp_path):
    label = {"name": "species", "task": "multiclass", "column": "species",
             "classes": ["setosa", "versicolor"]}
    message = _error(_config(tmp_path, IRIS_CSV, label, IRIS_FEATURES))
    assert "label.column: 'species' has values not in label.classes: 'virginica'" in message


def test_continuous_label_under_binary_is_one_line_before_anything_runs(tmp_path):
    path = _config(tmp_path, DIABETES_CSV, {"name": "y", "column": "bp"},
                   {"numeric": {"names": ["age"]}})
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == 1
    [line] = [line for line in result.output.splitlines() if line.strip()]
    assert line.endswith("label.column: 'bp' has 37 distinct non-integer values; task binary "
                         "expects two classes (did you mean task: regression?)")
    assert not (tmp_path / "out").exists()


def test_integer_label_with_many_values_under_multiclass(tmp_path):
    label = {"name": "progression", "task": "multiclass", "column": "progression"}
    message = _error(_config(tmp_path, DIABETES_CSV, label, DIABETES_FEATURES))
    assert "label.column: 'progression' has 214 distinct values, more than 100 classes (did " \
           "you mean task: regression?)" in message


def test_single_class_in_the_data(tmp_path):
    setosa = _edited_csv(tmp_path, IRIS_CSV, lambda i, r: r if r["species"] == "setosa" else None)
    label = {"name": "species", "task": "multiclass", "column": "species"}
    message = _error(_config(tmp_path, setosa, label, IRIS_FEATURES))
    assert message.endswith("label.column: 'species' has a single class, 'setosa'; a classifier "
                            "needs two or more")


def test_task_options_that_do_not_fit(tmp_path):
    message = _error(_config(tmp_path, DIABETES_CSV, {"name": "y", "task": "regression",
                                                      "column": "progression", "positive": 1},
                             DIABETES_FEATURES))
    assert "label.positive: only a binary label.column has a positive value" in message
    message = _error(_config(tmp_path, DIABETES_CSV, {"name": "y", "task": "regression",
                                                      "derived": {"numerator": "s1",
                                                                  "denominator": "s2",
                                                                  "greater_than": 1.0}},
                             DIABETES_FEATURES))
    assert "label.derived: a derived label is binary, not regression" in message
    message = _error(_config(tmp_path, DIABETES_CSV, {"name": "y", "task": "ordinal",
                                                      "column": "progression"},
                             DIABETES_FEATURES))
    assert "label.task: expected 'binary', 'multiclass' or 'regression', got 'ordinal'" in message


def test_missing_labels_are_counted_and_said(tmp_path):
    holes = _edited_csv(tmp_path, IRIS_CSV,
                        lambda i, r: {**r, "species": ""} if i % 10 == 0 else r)
    path = _config(tmp_path, holes, {"name": "species", "task": "multiclass",
                                     "column": "species"}, IRIS_FEATURES)
    from skewless.pipeline.config import check_references
    from skewless.pipeline.config import load_config as load

    config, profile = check_references(load(path, check_data=False))
    assert (profile.rows, profile.missing) == (150, 15)
    assert profile.missing_note() == ("15 of 150 rows have no 'species': they stay in the "
                                      "statistics but are left out of training and evaluation")
    assert config.label.classes == ("setosa", "versicolor", "virginica")
