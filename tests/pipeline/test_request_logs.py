"""Reading request logs: Predict, Classify and Regress records, files being written, damage."""

from __future__ import annotations

import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from skewless.pipeline.request_logs import RequestLogError, log_files, read_logs, row_example
from skewless.transforms.task import BinaryTask, MulticlassTask, RegressionTask
from tests.pipeline.request_log_writer import classify_log, predict_log, write_logs

ROWS = [{"fare": 7.5, "trip_start_hour": 13, "company": "Flash Cab"},
        {"fare": 30.25, "trip_start_hour": 2, "company": "Blue Ribbon"}]


def test_predict_and_classify_records_give_the_rows_sent(tmp_path):
    write_logs(tmp_path, [predict_log("taxi", 3, ROWS, 1_700_000_000, probabilities=[0.25, 0.5]),
                          classify_log("taxi", 3, ROWS[:1], 1_700_000_060)])
    logs = read_logs(tmp_path, "taxi", BinaryTask())
    predict, classify = logs.requests
    assert predict.rows == ROWS
    assert predict.predictions == [0.25, 0.5]
    assert (predict.timestamp, predict.version) == (1_700_000_000, 3)
    assert classify.rows == ROWS[:1]
    assert classify.predictions is None  # no response logged: the monitor recomputes them
    assert (logs.files, logs.corrupt) == (1, 0)


def test_predict_records_of_serialized_examples_give_their_rows(tmp_path):
    log = predict_log("taxi", 1, [{"examples": "x"}], 7)
    log.predict_log.request.inputs["examples"].CopyFrom(tf.make_tensor_proto(
        [row_example(row).SerializeToString() for row in ROWS], dtype=tf.string))
    write_logs(tmp_path, [log])
    [request] = read_logs(tmp_path, "taxi", BinaryTask()).requests
    assert request.rows == ROWS


def test_served_predictions_by_task(tmp_path):
    write_logs(tmp_path, [classify_log("iris", 1, ROWS, 5, results=[
        [("setosa", 0.7), ("versicolor", 0.2), ("virginica", 0.1)],
        [("setosa", 0.1), ("versicolor", 0.1), ("virginica", 0.8)]])])
    [request] = read_logs(tmp_path, "iris", MulticlassTask(
        classes=("setosa", "versicolor", "virginica"))).requests
    assert request.predictions == ["setosa", "virginica"]  # the class with the best score
    [request] = read_logs(tmp_path, "iris", BinaryTask()).requests
    assert request.predictions == pytest.approx([0.1, 0.8])  # the last (positive) class


def test_regress_records_and_a_context_shared_by_examples(tmp_path):
    log = prediction_log_pb2.PredictionLog()
    log.log_metadata.model_spec.name = "diabetes"
    log.log_metadata.timestamp_secs = 5
    listed = log.regress_log.request.input.example_list_with_context
    listed.context.features.feature["sex"].int64_list.value.append(2)
    listed.examples.add().features.feature["bmi"].float_list.value.append(26.5)
    log.regress_log.response.result.regressions.add().value = 151.0
    write_logs(tmp_path, [log])
    [request] = read_logs(tmp_path, "diabetes", RegressionTask()).requests
    assert request.rows == [{"sex": 2, "bmi": 26.5}]
    assert request.predictions == [151.0]


def test_files_still_being_written_are_not_read(tmp_path):
    (tmp_path / "requests-20261124T120000Z-1-00001.tfrecord.tmp").write_bytes(b"partial")
    write_logs(tmp_path, [predict_log("taxi", 1, ROWS, 10)])
    assert [p.suffix for p in log_files(tmp_path)] == [".tfrecord"]
    assert read_logs(tmp_path, "taxi", BinaryTask()).corrupt == 0


def test_a_corrupt_record_is_skipped_and_counted(tmp_path):
    path = write_logs(tmp_path, [predict_log("taxi", 1, ROWS[:1], 10),
                                 predict_log("taxi", 1, ROWS[1:], 11),
                                 predict_log("taxi", 1, ROWS[:1], 12)])
    data = bytearray(path.read_bytes())
    first = 12 + int.from_bytes(data[:8], "little") + 4
    data[first + 12 + 5] ^= 0xFF  # one byte inside the second record's data: its CRC fails
    path.write_bytes(bytes(data))
    write_logs(tmp_path, [predict_log("taxi", 1, ROWS, 13)], seq=1)
    (tmp_path / "requests-20261124T120000Z-1-00009.tfrecord").write_bytes(b"\x05" * 30)
    logs = read_logs(tmp_path, "taxi", BinaryTask())
    assert [r.timestamp for r in logs.requests] == [10, 12, 13]  # after the damage, read on
    assert logs.corrupt == 2  # the damaged record, and the file of garbage
    assert logs.files == 3


def test_a_truncated_file_counts_one_corrupt_record(tmp_path):
    path = write_logs(tmp_path, [predict_log("taxi", 1, ROWS, t) for t in (10, 11)])
    path.write_bytes(path.read_bytes()[:-7])
    logs = read_logs(tmp_path, "taxi", BinaryTask())
    assert ([r.timestamp for r in logs.requests], logs.corrupt) == ([10], 1)


@pytest.mark.parametrize("case, message", [
    ("missing", "no log folder {dir}"),
    ("empty", "no request log files (*.tfrecord) in {dir}"),
    ("only-tmp", "no request log files (*.tfrecord) in {dir}"),
    ("other-model", "the logs in {dir} are of model 'iris', not 'taxi' (serving.model_name)"),
    ("all-corrupt", "no readable request in 1 log file(s) in {dir} (1 corrupt record(s))"),
])
def test_folders_that_cannot_be_monitored_say_why_in_one_line(tmp_path, case, message):
    folder = tmp_path / "logs"
    if case != "missing":
        folder.mkdir()
    if case == "only-tmp":
        (folder / "requests-20261124T120000Z-1-00000.tfrecord.tmp").write_bytes(b"")
    if case == "other-model":
        write_logs(folder, [predict_log("iris", 1, ROWS, 10)])
    if case == "all-corrupt":
        (folder / "requests-20261124T120000Z-1-00000.tfrecord").write_bytes(b"not a record")
    with pytest.raises(RequestLogError) as error:
        read_logs(folder, "taxi", BinaryTask())
    assert str(error.value) == message.format(dir=folder)
