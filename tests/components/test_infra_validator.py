"""The InfraValidator's executor on small SavedModels and a tiny eval split, and the Pusher that
requires its blessing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tfx.proto import infra_validator_pb2, pusher_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from skewless.components.infra_validator import executor as iv
from skewless.components.pusher import executor as pusher
from skewless.serving.warmup import WARMUP_FILE, read_tfrecords
from tests.serving import example_models

ROWS = 12


def _examples(tmp_path: Path) -> standard_artifacts.Examples:
    """An ExampleGen-like artifact whose eval split holds taxi-like rows (GZIP TFRecords)."""
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    examples.split_names = '["train", "eval"]'
    split = tmp_path / "examples" / "Split-eval"
    split.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(split / "data_tfrecord-00000-of-00001.gz"),
                              options="GZIP") as writer:
        for row in example_models.taxi_rows(ROWS):
            feature = {}
            for name, value in row.items():
                if isinstance(value, str):
                    feature[name] = tf.train.Feature(
                        bytes_list=tf.train.BytesList(value=[value.encode()]))
                elif isinstance(value, int):
                    feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
                else:
                    feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())
    return examples


def _model(tmp_path: Path, export) -> standard_artifacts.Model:
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "model")
    export(str(tmp_path / "model" / "Format-Serving"))
    return model


def export_failing_model(path: str) -> None:
    """A model whose serving signature raises on every real row (fares are never negative)."""
    module = tf.Module()
    specs = [tf.TensorSpec([None], dtype, name)
             for name, dtype in example_models.TAXI_FEATURES.items()]

    @tf.function(input_signature=specs)
    def serve(trip_miles, fare, trip_start_hour, payment_type, company):
        check = tf.debugging.assert_less(fare, -1.0, message="fare must be negative")
        with tf.control_dependencies([check]):
            return {"probabilities": tf.sigmoid(trip_miles)}

    tf.saved_model.save(module, path, signatures={"serving_default": serve})


def export_batch_dependent_model(path: str) -> None:
    """A model that scores a row against the mean of its batch (batch statistics left on at
    inference): alone, every row scores 0.5."""
    module = tf.Module()
    specs = [tf.TensorSpec([None], dtype, name)
             for name, dtype in example_models.TAXI_FEATURES.items()]

    @tf.function(input_signature=specs)
    def serve(trip_miles, fare, trip_start_hour, payment_type, company):
        return {"probabilities": tf.sigmoid(fare - tf.reduce_mean(fare))}

    tf.saved_model.save(module, path, signatures={"serving_default": serve})


def run_validator(tmp_path: Path, export, rows: int = 8, max_latency_ms: float = 5000.0):
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = str(tmp_path / "blessing")
    request_spec = infra_validator_pb2.RequestSpec(split_name="eval", num_examples=rows,
                                                   make_warmup=True)
    validation_spec = infra_validator_pb2.ValidationSpec(max_loading_time_seconds=60)
    iv.Executor().Do(
        {iv.MODEL_KEY: [_model(tmp_path, export)], iv.EXAMPLES_KEY: [_examples(tmp_path)]},
        {iv.BLESSING_KEY: [blessing]},
        {iv.VALIDATION_SPEC_KEY: proto_utils.proto_to_json(validation_spec),
         iv.REQUEST_SPEC_KEY: proto_utils.proto_to_json(request_spec),
         iv.MAX_LATENCY_MS_KEY: max_latency_ms},
    )
    return blessing


def test_a_model_that_serves_is_blessed_with_its_warmup_requests(tmp_path):
    blessing = run_validator(tmp_path, example_models.export_taxi_model)
    assert blessing.get_int_custom_property(iv.BLESSED_PROPERTY) == 1
    assert blessing.get_int_custom_property(iv.HAS_MODEL_PROPERTY) == 1
    assert blessing.get_string_custom_property(iv.PROBLEM_PROPERTY) == ""
    assert blessing.get_int_custom_property(iv.REQUESTS_PROPERTY) == 16  # 8 rows, REST + gRPC
    assert 0 < blessing.get_float_custom_property(iv.LOAD_SECONDS_PROPERTY) < 60
    p50 = blessing.get_float_custom_property(iv.LATENCY_P50_PROPERTY)
    assert 0 < p50 <= blessing.get_float_custom_property(iv.LATENCY_MAX_PROPERTY) < 5000
    assert (Path(blessing.uri) / iv.BLESSED_FILE).is_file()
    # The warm-up file: one PredictionLog per row, each a Predict of one row on serving_default.
    from tensorflow_serving.apis import prediction_log_pb2

    stamped = Path(blessing.uri) / "stamped_model"
    records = list(read_tfrecords(str(stamped / WARMUP_FILE)))
    assert len(records) == 8
    log = prediction_log_pb2.PredictionLog.FromString(records[0])
    request = log.predict_log.request
    assert request.model_spec.signature_name == "serving_default"
    assert sorted(request.inputs) == sorted(example_models.TAXI_FEATURES)
    assert [d.size for d in request.inputs["fare"].tensor_shape.dim] == [1]
    assert (stamped / "saved_model.pb").is_file()


def test_a_model_whose_signature_fails_on_real_rows_is_not_blessed_and_says_why(tmp_path):
    blessing = run_validator(tmp_path, export_failing_model)
    assert blessing.get_int_custom_property(iv.BLESSED_PROPERTY) == 0
    assert blessing.get_int_custom_property(iv.HAS_MODEL_PROPERTY) == 0
    problem = blessing.get_string_custom_property(iv.PROBLEM_PROPERTY)
    assert problem.startswith("the model did not load: ")
    assert "warm-up request 1 failed" in problem and "fare must be negative" in problem
    assert "\n" not in problem
    assert (Path(blessing.uri) / iv.NOT_BLESSED_FILE).is_file()
    assert not (Path(blessing.uri) / "stamped_model").exists()


def test_answers_that_differ_from_in_process_predictions_are_not_blessed(tmp_path):
    blessing = run_validator(tmp_path, export_batch_dependent_model)
    assert blessing.get_int_custom_property(iv.BLESSED_PROPERTY) == 0
    problem = blessing.get_string_custom_property(iv.PROBLEM_PROPERTY)
    assert problem.startswith("REST answer to row 0: output probabilities is [0.5], "
                              "the in-process prediction [")


def test_a_request_slower_than_the_limit_is_not_blessed(tmp_path):
    blessing = run_validator(tmp_path, example_models.export_taxi_model, rows=2,
                             max_latency_ms=0.001)
    assert blessing.get_int_custom_property(iv.BLESSED_PROPERTY) == 0
    problem = blessing.get_string_custom_property(iv.PROBLEM_PROPERTY)
    assert problem.startswith("the slowest request took ")
    assert problem.endswith("ms, more than the limit of 0.001 ms")
    assert blessing.get_int_custom_property(iv.REQUESTS_PROPERTY) == 4


def _push(tmp_path: Path, model_blessed: int, infra_blessing):
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "model")
    model_blessing = standard_artifacts.ModelBlessing()
    model_blessing.set_int_custom_property("blessed", model_blessed)
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed")
    base = tmp_path / "serving" / "taxi"
    inputs = {"model": [model], "model_blessing": [model_blessing]}
    if infra_blessing is not None:
        inputs["infra_blessing"] = [infra_blessing]
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=str(base)))
    pusher.Executor().Do(inputs, {"pushed_model": [pushed]},
                         {"push_destination": proto_utils.proto_to_json(destination)})
    return pushed, base


@pytest.fixture(scope="module")
def blessings(tmp_path_factory):
    """The blessing of a model that serves and of one that does not."""
    good = run_validator(tmp_path_factory.mktemp("good"), example_models.export_taxi_model)
    bad = run_validator(tmp_path_factory.mktemp("bad"), export_failing_model)
    return good, bad


def test_the_pusher_pushes_the_validated_copy_with_its_warmup_file(tmp_path, blessings):
    good, _ = blessings
    pushed, base = _push(tmp_path, 1, good)
    assert pushed.get_int_custom_property("pushed") == 1
    [version] = os.listdir(base)
    assert len(list(read_tfrecords(str(base / version / WARMUP_FILE)))) == 8


@pytest.mark.parametrize("model_blessed, which", [(1, "bad"), (1, None), (0, "good")])
def test_the_pusher_requires_both_blessings(tmp_path, blessings, model_blessed, which):
    good, bad = blessings
    infra = {"good": good, "bad": bad, None: None}[which]
    pushed, base = _push(tmp_path, model_blessed, infra)
    assert pushed.get_int_custom_property("pushed") == 0
    assert not base.exists() or os.listdir(base) == []


def test_answer_problem_names_what_is_malformed():
    expected = {"probabilities": np.array([0.25, 0.75], np.float32),
                "classes": np.array([b"0", b"1"], object)}
    assert iv_answer(expected, expected) == ""
    assert iv_answer({"probabilities": expected["probabilities"]}, expected) == (
        "outputs ['probabilities'], the signature declares ['classes', 'probabilities']")
    assert iv_answer({**expected, "probabilities": np.float32(0.5)}, expected) == (
        "output probabilities has shape [], not one value per row of 2")
    assert iv_answer({**expected, "probabilities": np.array([0.25, np.nan])}, expected) == (
        "output probabilities is not finite: [0.25, nan]")
    assert iv_answer({**expected, "classes": np.array([b"1", b"1"], object)}, expected) == (
        "output classes is [b'1', b'1'], the in-process prediction [b'0', b'1']")


def iv_answer(answer, expected) -> str:
    from skewless.serving.infra_validation import answer_problem

    return answer_problem(answer, expected, 2)
