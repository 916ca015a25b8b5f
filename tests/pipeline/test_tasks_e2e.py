"""Every task end to end on its bundled data, as a user runs it (`skewless run` in a subprocess):
multiclass on iris, regression on diabetes (both with missing values and missing labels added),
and a user's own model (`model.build_fn`) on a taxi sample. Each run blesses and pushes a model
that `skewless serve` answers with Predict over REST and gRPC and with Classify or Regress, and
the skew-parity checks hold for it."""

from __future__ import annotations

import csv
import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import yaml

from skewless.pipeline import build
from skewless.pipeline.config import load_config
from tests.conftest import DIABETES_CONFIG, IRIS_CONFIG, REPO, sample_config_dict, write_config
from tests.pipeline.helpers import (
    assert_offline_report,
    report_of,
    skewless,
    states,
    versions,
)
from tests.pipeline.parity import (
    assert_batch_matches_rest,
    assert_served_predictions_match,
    assert_signatures_agree,
    assert_transform_parity,
    classify_or_regress,
    pushed_model,
)
from tests.transforms.custom_network import CUSTOM_LAYER

pytestmark = pytest.mark.e2e


@dataclasses.dataclass(frozen=True)
class Case:
    """One bundled config on a sample with holes, and what its run must show."""

    name: str
    config: Path | None
    data: Path | None
    blank: dict[str, int]  # column -> every n-th row left empty
    drift_feature: str
    metric_line: str
    steps: int


CASES = {
    "iris": Case("iris", IRIS_CONFIG, REPO / "data" / "iris" / "data.csv",
                 {"sepal_width": 7, "species": 25}, "sepal_length_xf",
                 "multiclass metrics: SparseCategoricalAccuracy", 150),
    "diabetes": Case("diabetes", DIABETES_CONFIG, REPO / "data" / "diabetes" / "data.csv",
                     {"bmi": 9, "sex": 11, "progression": 40}, "bmi_xf",
                     "regression metrics: MeanSquaredError", 300),
    "custom": Case("custom", None, None, {}, "trip_miles_xf", "binary metrics: AUC", 100),
}


def _with_holes(source: Path, target: Path, blank: dict[str, int]) -> Path:
    """A copy of a CSV with every n-th value of some columns left empty."""
    with source.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for column, every in blank.items():
        for i in range(1, len(rows), every):
            rows[i][column] = ""
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return target


def _config_path(case: Case, workdir: Path, sample_csv: Path) -> Path:
    if case.config is None:  # the user's own model on the taxi sample (binary)
        raw = sample_config_dict(workdir, sample_csv, model={
            "build_fn": "tests.transforms.custom_network.build", "train_steps": case.steps,
            "eval_steps": 10, "learning_rate": 0.01})
        raw["evaluation"]["thresholds"] = [{"metric": "AUC", "lower_bound": 0.5,
                                            "max_decrease": 0.5}]
        return write_config(workdir / "custom.yaml", raw)
    raw = yaml.safe_load(case.config.read_text())
    data = _with_holes(case.data, workdir / "data" / "data.csv", case.blank)
    raw["pipeline"]["output_dir"] = str(workdir / "out")
    raw["data"]["path"] = str(data)
    raw["serving"]["push_dir"] = str(workdir / "serving")
    raw["metadata"]["sqlite"] = str(workdir / "out" / "metadata.sqlite")
    raw["model"].update(train_steps=case.steps, eval_steps=5)
    return write_config(workdir / f"{case.name}.yaml", raw)


@pytest.fixture(scope="module", params=list(CASES))
def run(request, tmp_path_factory, sample_csv):
    case = CASES[request.param]
    workdir = tmp_path_factory.mktemp(case.name)
    path = _config_path(case, workdir, sample_csv)
    result = skewless("run", "--config", str(path), tmpdir=workdir / "tmp")
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    return case, load_config(path), result, path, workdir


def test_run_blesses_and_pushes_with_the_tasks_metrics(run):
    case, config, result, _, _ = run
    out = result.stdout
    assert case.metric_line in out
    assert "blessed: yes" in out
    [version] = versions(config.model_push_dir)
    assert f"pushed: version {version}" in out
    if case.blank.get(config.label.column):
        assert "without a label, not trained or evaluated on" in out
        assert "left out of training and evaluation" in out


def test_run_writes_an_offline_report_with_the_tasks_figures(run):
    case, config, result, _, _ = run
    metric = case.metric_line.split(": ")[1]
    assert_offline_report(
        report_of(result.stdout), ("statistics", "training", "evaluation", "slices"),
        (metric, "PASS", "Blessed", f"task {config.task.kind}", "Anomalies"))


def test_signatures_and_outputs_fit_the_task(run):
    case, config, _, _, _ = run
    model = pushed_model(config)
    task = config.task
    assert {"serving_default", "serving_tf_example", "transform_features",
            task.api_signature} <= set(model.signatures)
    outputs = set(model.signatures["serving_default"].structured_outputs)
    expected = {"binary": {"probabilities", "classes"},
                "multiclass": {"scores", "classes", "class_ids"},
                "regression": {"predictions"}}[task.kind]
    assert outputs == expected
    if case.name == "custom":
        names = {v.name for v in model.variables}
        assert any(CUSTOM_LAYER in n for n in names), sorted(names)[:10]


def test_skew_materialised_transform_equals_exported_graph(run):
    case, config, _, _, _ = run
    assert_transform_parity(config, 100, case.drift_feature)


def test_skew_raw_feature_and_tf_example_signatures_agree(run):
    _, config, _, _, _ = run
    outputs = assert_signatures_agree(config, 100)
    key = config.task.prediction_key
    assert np.ptp(outputs[key]) > 0  # not a constant model


def test_served_predictions_match_in_process_over_rest_and_grpc(run):
    _, config, _, _, _ = run
    assert_served_predictions_match(config, 100)


def test_classify_or_regress_answer_over_rest_and_grpc(run):
    _, config, _, _, _ = run
    by_rest, by_grpc, expected = classify_or_regress(config, 20)
    if config.task.api_signature == "regression":
        np.testing.assert_allclose(by_rest, expected["outputs"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose([r.value for r in by_grpc.regressions], expected["outputs"],
                                   rtol=1e-6, atol=1e-6)
        return
    names = [[c.decode() for c in row] for row in expected["classes"].tolist()]
    assert [[label for label, _ in row] for row in by_rest] == names
    np.testing.assert_allclose([[score for _, score in row] for row in by_rest],
                               expected["scores"], atol=1e-6)
    assert [[c.label for c in r.classes] for r in by_grpc.classifications] == names
    np.testing.assert_allclose([[c.score for c in r.classes] for r in by_grpc.classifications],
                               expected["scores"], atol=1e-6)
    if config.task.kind == "multiclass":
        assert names[0] == ["setosa", "versicolor", "virginica"]


def test_the_other_api_gets_tf_servings_error(run):
    """A regressor asked to Classify, or a classifier asked to Regress: an error, not a crash."""
    from skewless.serving.client import RestClient
    from skewless.serving.errors import ServingError
    from tests.pipeline.parity import serving

    _, config, _, _, _ = run
    wrong = "classify" if config.task.api_signature == "regression" else "regress"
    with serving(config) as server, RestClient(port=server.rest_port) as rest:
        with pytest.raises(ServingError) as caught:
            rest.request("POST", f"/v1/models/{config.serving.model_name}:{wrong}",
                         {"examples": [{"x": 1.0}]})
    assert caught.value.code.name == "INVALID_ARGUMENT"
    method = "classification" if wrong == "classify" else "regression"
    assert f"Expected {method} signature method_name to be tensorflow/serving/{wrong}" in str(
        caught.value)


@pytest.mark.parametrize("run", ["diabetes"], indirect=True)
def test_regression_worse_than_its_baseline_by_more_than_max_increase_is_not_pushed(run):
    _, config, _, path, workdir = run
    before = versions(config.model_push_dir)
    raw = yaml.safe_load(path.read_text())
    raw["model"].update(train_steps=2, learning_rate=0.0001)
    raw["evaluation"]["thresholds"] = [{"metric": "MeanAbsoluteError", "upper_bound": 1000.0,
                                        "max_increase": 5.0}]
    result = skewless("run", "--config", str(write_config(workdir / "weak.yaml", raw)),
                      tmpdir=workdir / "tmp")
    assert result.returncode == 0, result.stderr[-3000:]
    assert states(result.stdout)[build.TRAINER] == "executed"
    [line] = [x for x in result.stdout.splitlines() if "FAIL" in x or "PASS" in x]
    assert line.strip().startswith("FAIL  MeanAbsoluteError") and "baseline" in line, line
    assert "max increase 5.0000" in line
    assert "blessed: NO" in result.stdout
    assert versions(config.model_push_dir) == before


def test_batch_predictions_equal_online_rest_predictions(run):
    """predict-batch scores new rows (the label column dropped) as `skewless serve` answers them,
    missing values included, for every task."""
    import pyarrow.parquet as pq

    _, config, _, _, workdir = run
    with Path(config.data.path).open(newline="") as f:
        reader = csv.DictReader(f)
        names = [n for n in reader.fieldnames if n != config.label.column]
        rows = list(itertools.islice(reader, 120))
    new = workdir / "new" / "tonight.csv"
    new.parent.mkdir()
    with new.open("w", newline="") as f:
        writer = csv.DictWriter(f, names, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    output = workdir / "scored" / "predictions.parquet"
    result = skewless("predict-batch", "--config", str(config.source), "--data", str(new),
                      "--output", str(output), tmpdir=workdir / "tmp")
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    assert f"rows in: {len(rows)}, rows out: {len(rows)}" in result.stdout
    table = pq.read_table(output)
    assert table.num_rows == len(rows)
    assert set(names) <= set(table.column_names)
    assert_batch_matches_rest(config, table)
