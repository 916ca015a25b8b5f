"""The config file: every kind of bad config fails with one line naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from skewless.pipeline.config import ConfigError, load_config
from tests.conftest import REPO, TAXI_CONFIG, sample_config_dict, write_config, write_sample


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message, message
    assert str(path.resolve()) in message or str(path) in message, message
    return message


@pytest.fixture()
def small_csv(tmp_path) -> Path:
    return write_sample(tmp_path / "data" / "data.csv", 20)


def _config(tmp_path: Path, small_csv: Path, **sections) -> Path:
    return write_config(tmp_path / "cfg.yaml", sample_config_dict(tmp_path, small_csv, **sections))


def test_bundled_config_loads_with_absolute_paths_and_typed_values():
    config = load_config(TAXI_CONFIG)
    assert config.data.path == REPO / "data" / "taxi" / "data.csv"
    assert config.pipeline.output_dir == REPO / "artifacts" / "taxi"
    assert config.model_push_dir == REPO / "artifacts" / "serving" / "taxi"
    assert config.features.numeric.names == ("trip_miles", "fare", "trip_seconds")
    assert config.label.derived.greater_than == 0.2
    assert config.evaluation.thresholds[0].lower_bound == 0.6


def test_config_is_immutable():
    config = load_config(TAXI_CONFIG)
    with pytest.raises(Exception, match="frozen"):
        config.model.train_steps = 5


def test_unknown_key_is_named(tmp_path, small_csv):
    raw = sample_config_dict(tmp_path, small_csv)
    raw["model"]["train_stpes"] = 10
    message = _error(write_config(tmp_path / "c.yaml", raw))
    assert "model.train_stpes: unknown key" in message


def test_unknown_section_is_named(tmp_path, small_csv):
    message = _error(_config(tmp_path, small_csv, trainer={"steps": 1}))
    assert "trainer: unknown key" in message


def test_wrong_type_names_key_expected_and_got(tmp_path, small_csv):
    message = _error(_config(tmp_path, small_csv, model={"train_steps": "many"}))
    assert "model.train_steps" in message
    assert "integer" in message and "'many'" in message


def test_string_number_is_not_coerced(tmp_path, small_csv):
    message = _error(_config(tmp_path, small_csv, model={"batch_size": "64"}))
    assert "model.batch_size" in message and "integer" in message


def test_bad_format_lists_the_choices(tmp_path, small_csv):
    message = _error(_config(tmp_path, small_csv, data={"format": "xlsx"}))
    assert "data.format" in message and "'csv', 'parquet', 'tfrecord' or 'avro'" in message


def test_missing_required_key(tmp_path, small_csv):
    raw = sample_config_dict(tmp_path, small_csv)
    del raw["serving"]["model_name"]
    message = _error(write_config(tmp_path / "c.yaml", raw))
    assert "serving.model_name: required key is missing" in message


def test_bad_pipeline_name_says_in_words_what_is_allowed_and_why(tmp_path, small_csv):
    message = _error(_config(tmp_path, small_csv, pipeline={"name": "Taxi_Pipeline"}))
    assert message.endswith(
        "pipeline.name: expected lowercase letters, digits and hyphens, starting with a letter or "
        "digit, at most 128 characters (it is also the Kubeflow pipeline name, which allows no "
        "more), got 'Taxi_Pipeline'")
    assert "[a-z" not in message and "pattern" not in message


def test_feature_the_data_lacks(tmp_path, small_csv):
    raw = sample_config_dict(tmp_path, small_csv)
    raw["features"]["numeric"]["names"] = ["trip_miles", "fare", "trip_kilometres"]
    message = _error(write_config(tmp_path / "c.yaml", raw))
    assert "features.numeric.names: the data at" in message and "'trip_kilometres'" in message


def test_label_source_the_data_lacks(tmp_path, small_csv):
    raw = sample_config_dict(tmp_path, small_csv)
    raw["label"]["derived"]["numerator"] = "tip_amount"
    message = _error(write_config(tmp_path / "c.yaml", raw))
    assert "label.derived.numerator: the data at" in message and "'tip_amount'" in message


def test_missing_data_file(tmp_path, small_csv):
    message = _error(_config(tmp_path, small_csv, data={"path": str(tmp_path / "nope.csv")}))
    assert "data.path: no such file or folder" in message and "nope.csv" in message


def test_data_in_another_format_than_declared(tmp_path, small_csv):
    message = _error(_config(tmp_path, small_csv, data={"format": "parquet"}))
    assert "data.path: cannot read" in message and "as parquet" in message
    message = _error(_config(tmp_path, small_csv, data={"format": "tfrecord"}))
    assert "data.path: cannot read" in message and "as tfrecord" in message


def test_folder_without_data_files(tmp_path, small_csv):
    empty = tmp_path / "empty"
    empty.mkdir()
    message = _error(_config(tmp_path, small_csv, data={"path": str(empty)}))
    assert "data.path: no csv files in" in message


def test_data_only_in_subfolders_is_not_read(tmp_path, small_csv):
    # ExampleGen reads the folder's own files (pattern *.csv), so the check must agree.
    nested = write_sample(tmp_path / "by_month" / "2013-05" / "data.csv", 5)
    message = _error(_config(tmp_path, small_csv, data={"path": str(nested.parent.parent)}))
    assert "no csv files in" in message and "not subfolders" in message


def test_label_name_that_is_also_a_feature(tmp_path, small_csv):
    message = _error(_config(tmp_path, small_csv,
                             label={"name": "fare", "derived": {"numerator": "tips",
                                    "denominator": "fare", "greater_than": 0.2}}))
    assert "label.name: 'fare' is also a feature name" in message


def test_missing_curated_schema_file(tmp_path, small_csv):
    message = _error(_config(tmp_path, small_csv, schema={"curated": "frozen/schema.pbtxt"}))
    assert "schema.curated: no such file" in message


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("pipeline:\n  name: taxi\n  output_dir: [unclosed\n")
    message = _error(path)
    assert "not valid YAML at line" in message


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    assert "expected a mapping" in _error(path)


def test_label_numerator_as_feature_is_a_leak(tmp_path, small_csv):
    raw = sample_config_dict(tmp_path, small_csv)
    raw["features"]["numeric"]["names"] = ["trip_miles", "fare", "tips"]
    message = _error(write_config(tmp_path / "c.yaml", raw))
    assert "label leak" in message and "'tips'" in message


def test_feature_under_two_treatments(tmp_path, small_csv):
    raw = sample_config_dict(tmp_path, small_csv)
    raw["features"]["bucketized"]["names"] = ["pickup_latitude", "fare"]
    message = _error(write_config(tmp_path / "c.yaml", raw))
    assert "two treatments: fare" in message


def test_feature_name_that_cannot_be_a_serving_input(tmp_path, small_csv):
    raw = sample_config_dict(tmp_path, small_csv)
    raw["features"]["numeric"]["names"] = ["trip_miles", "fare", "trip-seconds"]
    message = _error(write_config(tmp_path / "c.yaml", raw))
    assert "features: feature names must be letters" in message and "'trip-seconds'" in message


def test_cross_of_unlisted_feature(tmp_path, small_csv):
    raw = sample_config_dict(tmp_path, small_csv)
    raw["features"]["crosses"] = [{"features": ["trip_start_day", "weather"], "hash_buckets": 10}]
    message = _error(write_config(tmp_path / "c.yaml", raw))
    assert "features.crosses" in message and "weather" in message


def test_threshold_needs_a_bound_and_a_known_metric(tmp_path, small_csv):
    message = _error(_config(tmp_path, small_csv, evaluation={"thresholds": [{"metric": "AUC"}]}))
    assert "give a bound: lower_bound/max_decrease for a higher-is-better metric" in message
    message = _error(
        _config(tmp_path, small_csv,
                evaluation={"thresholds": [{"metric": "F7", "lower_bound": 0.5}]})
    )
    assert message.endswith(
        "evaluation.thresholds.0.metric: F7 is not a binary metric; use one of AUC, "
        "BinaryAccuracy, Precision, Recall, AUCPrecisionRecall")


def test_metric_of_another_task_is_one_line(tmp_path, small_csv):
    thresholds = [{"metric": "AUC", "lower_bound": 0.5},
                  {"metric": "MeanSquaredError", "upper_bound": 10.0}]
    message = _error(_config(tmp_path, small_csv, evaluation={"thresholds": thresholds}))
    assert message.endswith("evaluation.thresholds.1.metric: MeanSquaredError is not a binary "
                            "metric; use one of AUC, BinaryAccuracy, Precision, Recall, "
                            "AUCPrecisionRecall")


def test_bound_against_the_metric_direction_is_one_line(tmp_path, small_csv):
    thresholds = [{"metric": "AUC", "max_increase": 0.1}]
    message = _error(_config(tmp_path, small_csv, evaluation={"thresholds": thresholds}))
    assert message.endswith("evaluation.thresholds.0.metric: AUC is higher-is-better: use "
                            "lower_bound/max_decrease, not max_increase")


def test_regression_thresholds_take_upper_bounds_and_max_increase(tmp_path):
    from tests.conftest import DIABETES_CONFIG

    config = load_config(DIABETES_CONFIG)
    assert config.label.task == "regression"
    [threshold] = config.evaluation.thresholds
    assert threshold.metric == "MeanAbsoluteError"
    assert threshold.upper_bound is not None and threshold.max_increase is not None
    raw = __import__("yaml").safe_load(DIABETES_CONFIG.read_text())
    raw["evaluation"]["thresholds"] = [{"metric": "MeanAbsoluteError", "lower_bound": 1.0}]
    raw["data"]["path"] = str(REPO / "data" / "diabetes" / "data.csv")
    message = _error(write_config(tmp_path / "d.yaml", raw))
    assert message.endswith("MeanAbsoluteError is lower-is-better: use "
                            "upper_bound/max_increase, not lower_bound")
    raw["evaluation"]["thresholds"] = [{"metric": "Calibration", "upper_bound": 1.1}]
    message = _error(write_config(tmp_path / "d.yaml", raw))
    assert message.endswith("Calibration has no better direction; it takes no threshold")


def test_build_fn_import_path_is_checked(tmp_path, small_csv):
    message = _error(_config(tmp_path, small_csv, model={"build_fn": "mypkg.models.build"}))
    assert "model.build_fn: No module named 'mypkg'" in message
    message = _error(_config(tmp_path, small_csv, model={"build_fn": "tests.conftest.nothing"}))
    assert "model.build_fn: 'tests.conftest.nothing' names nothing callable in tests.conftest" \
        in message
    message = _error(_config(tmp_path, small_csv, model={"build_fn": "not a path"}))
    assert "model.build_fn: expected an import path like 'package.module.function'" in message


def test_preprocessing_fn_import_path_is_checked(tmp_path, small_csv):
    message = _error(
        _config(tmp_path, small_csv, transform={"preprocessing_fn": "mypkg.nowhere.fn"})
    )
    assert "transform.preprocessing_fn" in message and "mypkg" in message
    own = "skewless.transforms.preprocessing.preprocessing_fn"
    ok = _config(tmp_path, small_csv, transform={"preprocessing_fn": own})
    assert load_config(ok).transform.preprocessing_fn.endswith("preprocessing_fn")


def test_relative_paths_resolve_against_the_config_folder(tmp_path, small_csv):
    raw = sample_config_dict(tmp_path, small_csv)
    raw["data"]["path"] = "data/data.csv"
    raw["pipeline"]["output_dir"] = "out"
    config = load_config(write_config(tmp_path / "cfg.yaml", raw))
    assert config.data.path == small_csv.resolve()
    assert config.pipeline.output_dir == (tmp_path / "out").resolve()


def test_cli_prints_one_line_error_and_runs_nothing(tmp_path, small_csv):
    from click.testing import CliRunner

    from skewless.cli import main

    raw = sample_config_dict(tmp_path, small_csv)
    raw["model"]["train_steps"] = -5
    path = write_config(tmp_path / "cfg.yaml", raw)
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "model.train_steps" in lines[0] and "greater than 0" in lines[0]
    assert not (tmp_path / "out").exists()


def test_string_where_a_list_belongs(tmp_path, small_csv):
    raw = sample_config_dict(tmp_path, small_csv)
    raw["features"]["numeric"]["names"] = "trip_miles"
    message = _error(write_config(tmp_path / "c.yaml", raw))
    assert "features.numeric.names: expected a list, got 'trip_miles'" in message


def _tuning(tmp_path, small_csv, tuning: dict, **sections) -> Path:
    raw = sample_config_dict(tmp_path, small_csv, **sections)
    raw["tuning"] = tuning
    return write_config(tmp_path / "tuned.yaml", raw)


def test_tuning_section_loads_with_choices_and_ranges(tmp_path, small_csv):
    config = load_config(_tuning(tmp_path, small_csv, {
        "algorithm": "bayesian", "max_trials": 5, "reuse": "latest",
        "search_space": {"layers": {"min": 1, "max": 3}, "units": [16, 32],
                         "learning_rate": {"min": 0.0001, "max": 0.1, "sampling": "log"}}}))
    assert config.tuning.entries() == {
        "layers": {"min": 1, "max": 3, "sampling": "linear"}, "units": {"values": [16, 32]},
        "learning_rate": {"min": 0.0001, "max": 0.1, "sampling": "log"}}


@pytest.mark.parametrize(("tuning", "expected"), [
    ({"search_space": {"learning_rate": [0.01, -0.1]}},
     "tuning.search_space.learning_rate: -0.1 is impossible; learning_rate must be above 0.0"),
    ({"search_space": {"units": [16, 0]}},
     "tuning.search_space.units: 0 is impossible; units must be at least 1"),
    ({"search_space": {"layers": {"min": 3, "max": 1}}},
     "tuning.search_space.layers: min 3 is above max 1"),
    ({"search_space": {"learning_rate": {"min": 0.0, "max": 0.1, "sampling": "log"}}},
     "tuning.search_space.learning_rate: log sampling needs min above 0, got 0.0"),
    ({"search_space": {"batch_size": [8.5]}},
     "tuning.search_space.batch_size: 8.5 is not an integer"),
    ({"search_space": {"dropout": [0.1]}},
     "tuning.search_space.dropout: not a hyperparameter of the built-in model (layers, units, "
     "embedding_dim, batch_size, learning_rate); a model.build_fn declares its own in a "
     "`search_space` attribute"),
    ({"search_space": {}}, "tuning.search_space: name at least one hyperparameter to search"),
    ({"search_space": {"units": "many"}},
     "tuning.search_space.units: expected a list of values or a range {min: ..., max: ...}, "
     "got 'many'"),
    ({"search_space": {"learning_rate": {"min": 0.1}}},
     "tuning.search_space.learning_rate.max: required key is missing"),
    ({"search_space": {"units": [8]}, "algorithm": "grid"},
     "tuning.algorithm: expected 'random', 'bayesian' or 'hyperband', got 'grid'"),
    ({"search_space": {"units": [8]}, "max_trials": 0},
     "tuning.max_trials: expected greater than 0, got 0"),
    ({"search_space": {"units": [8]}, "hyperband": {"factor": 3}},
     "tuning.hyperband: settings for Hyperband, but the algorithm is random"),
])
def test_impossible_search_space_is_one_line(tmp_path, small_csv, tuning, expected):
    message = _error(_tuning(tmp_path, small_csv, tuning))
    assert message.endswith(expected), message


def test_build_fn_hyperparameters_must_be_declared(tmp_path, small_csv):
    model = {"build_fn": "tests.transforms.custom_network.poisonable"}
    load_config(_tuning(tmp_path, small_csv, {"search_space": {"poison": [0]}}, model=model))
    message = _error(_tuning(tmp_path, small_csv, {"search_space": {"dropout": [0.1]}},
                             model=model))
    assert message.endswith("tuning.search_space.dropout: not a hyperparameter of the built-in "
                            "model (layers, units, embedding_dim, batch_size, learning_rate) nor "
                            "declared in the `search_space` attribute of "
                            "tests.transforms.custom_network.poisonable")
