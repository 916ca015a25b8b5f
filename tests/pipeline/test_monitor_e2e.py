"""`skewless monitor` end to end on the shared pushed taxi model, served by `skewless serve` with
TF Serving's request logging on: skew and drift flag exactly the distorted features, undistorted
traffic passes, bad log folders say why, and new data with `--retrain` leads to a new blessed
version that the server picks up, with the trigger in MLMD."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from ml_metadata import metadata_store
from tensorflow_metadata.proto.v0 import anomalies_pb2

from skewless.cli import main
from skewless.pipeline.build import local_metadata
from skewless.pipeline.config import load_config
from skewless.pipeline.eval_rows import eval_rows
from skewless.pipeline.monitor_store import (
    RETRAIN_RUN_PROPERTY,
    SERVED_MODEL_KEY,
    TRIGGERS_PROPERTY,
    monitor_runs,
)
from skewless.pipeline.request_logs import log_files
from skewless.serving import config as serving_config
from skewless.serving.client import GrpcClient, RestClient
from skewless.serving.server import ModelServer, ServerOptions
from tests.conftest import TAXI_CSV, sample_config_dict, write_config
from tests.pipeline.helpers import assert_offline_report
from tests.pipeline.request_log_writer import classify_log, predict_log, write_logs

pytestmark = pytest.mark.e2e

NUMERIC, CATEGORICAL = "fare", "payment_type"
# The drift test's window (seconds): longer than sending the rows twice takes on a busy machine.
WINDOW = 15


@pytest.fixture(scope="module")
def taxi(pushed_taxi, tmp_path_factory):
    """A copy of the shared pushed model's MLMD store, push folder and data (a folder of CSV
    files now), so that this module's records and new versions stay its own:
    (config path, config, version, eval rows)."""
    shared, version = pushed_taxi
    work = tmp_path_factory.mktemp("monitor")
    data = work / "data"
    data.mkdir()
    shutil.copy2(shared.data.path, data / shared.data.path.name)  # same mtime: same fingerprint
    shutil.copytree(shared.serving.push_dir, work / "serving")
    (work / "out").mkdir()
    shutil.copy2(shared.metadata.sqlite, work / "out" / "metadata.sqlite")
    raw = sample_config_dict(work, data, model={"train_steps": 50, "eval_steps": 10},
                             evaluation={"thresholds": [{"metric": "AUC", "lower_bound": 0.0}]})
    path = write_config(work / "taxi.yaml", raw)
    config = load_config(path)
    return path, config, version, eval_rows(config)


def _batches(rows, size=10):
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def _traffic(rows, version, timestamp):
    """Predict requests of raw features and Classify requests of tf.Examples, alternating
    (logged without their responses: the monitor recomputes the served predictions)."""
    return [(predict_log if i % 2 else classify_log)("taxi", version, batch, timestamp)
            for i, batch in enumerate(_batches(rows))]


@contextlib.contextmanager
def _serving(config, logs: Path | None = None):
    """`skewless serve`'s server on the module's push folder, with REST and gRPC clients; with
    `logs`, the model config file turns on TF Serving's request logging of every request into
    that folder (the files are complete when the server stops)."""
    logging = "" if logs is None else f"""
    logging_config {{
      log_collector_config {{ type: "tfrecord" filename_prefix: "{logs}/taxi" }}
      sampling_config {{ sampling_rate: 1.0 }}
    }}"""
    models_config = config.serving.push_dir / "models-logging.config"
    models_config.write_text(f"""model_config_list {{
  config {{
    name: "taxi" base_path: "{config.model_push_dir}" model_platform: "tensorflow"{logging}
  }}
}}
""")
    options = ServerOptions(models=serving_config.load_model_config_file(str(models_config)),
                            port=0, rest_api_port=0, file_system_poll_wait_seconds=0.5)
    with ModelServer(options) as server, RestClient(port=server.rest_port) as rest, \
            GrpcClient(port=server.grpc_port) as grpc:
        yield rest, grpc


def _send(rest, grpc, rows) -> int:
    """The rows as requests, gRPC Predict of raw features and REST Classify of tf.Examples
    alternating, ten rows each; the number of requests."""
    batches = _batches(rows)
    for i, batch in enumerate(batches):
        if i % 2:
            grpc.predict("taxi", batch)
        else:
            rest.request("POST", "/v1/models/taxi:classify", {
                "signature_name": "classification", "examples": batch})
    return len(batches)


def _distorted(rows):
    return [{**row, NUMERIC: row[NUMERIC] * 100, CATEGORICAL: f"never seen {i % 4}"}
            for i, row in enumerate(rows)]


def _monitor(config_path, logs, *args, tmp_path):
    report = tmp_path / "monitor.json"
    result = CliRunner().invoke(main, ["monitor", "--config", str(config_path), "--logs",
                                       str(logs), "--json", str(report), *args])
    document = json.loads(report.read_text()) if report.exists() else None
    return result, document


def _failed(document, check):
    return {c["feature"] for c in document["comparisons"]
            if c["check"] == check and c["status"] == "FAIL"}


def test_undistorted_traffic_passes_and_a_corrupt_record_is_counted(taxi, tmp_path):
    config_path, config, version, rows = taxi
    logs = tmp_path / "logs"
    with _serving(config, logs) as (rest, grpc):
        _send(rest, grpc, rows)
    [path] = log_files(logs)  # written by the server
    broken = path.with_name(path.name.replace(".tfrecord", "-damaged.tfrecord"))
    broken.write_bytes(path.read_bytes()[:40] + b"\x00" * 10)  # a record cut short
    result, document = _monitor(config_path, logs, "--retrain", tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    assert document["rows"] == len(rows) and document["corrupt_records"] == 1
    assert document["served_versions"] == {str(version): len(_batches(rows))}
    assert document["predictions_from"] == "logs"
    prediction = [c for c in document["comparisons"] if c["check"] == "prediction_drift"]
    assert prediction[0]["status"] == "ok"  # the eval rows served as the eval split predicts
    assert "skipped 1 corrupt record(s)" in result.output
    skew = [c for c in document["comparisons"] if c["check"] == "skew"]
    assert {c["feature"] for c in skew} == set(config.features.raw_names)
    assert all(c["status"] == "ok" for c in skew), skew
    assert document["failed"] == [] and document["triggers"] == []
    assert "Retraining" not in result.output  # no trigger, no run
    assert "drift: n/a, no logged request in the window before" in result.output


def test_skew_and_drift_flag_exactly_the_distorted_features(taxi, tmp_path):
    config_path, config, version, rows = taxi
    logs = tmp_path / "logs"
    with _serving(config, logs) as (rest, grpc):
        _send(rest, grpc, rows)
        time.sleep(WINDOW + 1)  # the distorted traffic is the whole of the next window
        _send(rest, grpc, _distorted(rows))
    result, document = _monitor(config_path, logs, "--window", f"{WINDOW}s", tmp_path=tmp_path)
    assert result.exit_code == 1, result.output
    assert _failed(document, "skew") == {NUMERIC, CATEGORICAL}
    assert _failed(document, "drift") == {NUMERIC, CATEGORICAL}
    assert document["rows"] == document["previous_rows"] == len(rows)
    by_key = {(c["check"], c["feature"]): c for c in document["comparisons"]}
    assert by_key[("skew", CATEGORICAL)]["comparator"] == "L-infinity"
    assert by_key[("skew", NUMERIC)]["comparator"] == "Jensen-Shannon"
    assert by_key[("skew", NUMERIC)]["distance"] > 0.9  # ×100 leaves no overlap
    assert by_key[("prediction_drift", "prediction")]["status"] == "FAIL"
    # The table, one line per check and feature, and the one-line verdict.
    assert re.search(rf"^skew +{NUMERIC} +Jensen-Shannon +0\.9\d+ +0\.2500  FAIL$",
                     result.output, re.M), result.output
    assert re.search(r"^skew +company +L-infinity +0\.\d+ +0\.2500  ok$", result.output, re.M)
    assert "FAIL: 5 distance(s) over threshold: skew fare, skew payment_type, drift fare, " \
           "drift payment_type, prediction_drift prediction" in result.output
    # Schema validation in the SERVING environment: the unseen values, and nothing of the label.
    assert [(a["feature"], a["kind"]) for a in document["anomalies"]] == [
        (CATEGORICAL, "ENUM_TYPE_UNEXPECTED_STRING_VALUES")]
    # Prometheus: a gauge per check, feature and comparator.
    prom = (config.monitoring_dir / "skewless.prom").read_text()
    assert re.search(r'skewless_monitor_failed\{check="skew",comparator="L-infinity",'
                     r'feature="payment_type",model="taxi",version="\d+"\} 1\.0', prom), prom
    assert len(re.findall(r"^skewless_monitor_distance\{", prom, re.M)) == 2 * 14 + 1
    # The offline report: a plot per feature, training against serving.
    assert_offline_report(Path(document["outputs"]["report"]),
                          tuple(config.features.raw_names), ("skew fare", "never seen 0"))
    # MLMD: statistics and anomalies as TFX artifacts, output by an execution that took the
    # served model.
    store = metadata_store.MetadataStore(local_metadata(config))
    execution = monitor_runs(config)[-1]
    events = store.get_events_by_execution_ids([execution.id])
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    types = {store.get_artifact_types_by_id([a.type_id])[0].name: a for a in artifacts.values()}
    assert {"PushedModel", "ExampleStatistics", "ExampleAnomalies"} <= set(types)
    served = [e for e in events if e.path.steps[0].key == SERVED_MODEL_KEY]
    assert artifacts[served[0].artifact_id].custom_properties["pushed_version"].string_value == \
        str(version)
    anomalies = anomalies_pb2.Anomalies.FromString(
        (Path(types["ExampleAnomalies"].uri) / "Split-serving"
         / "SchemaDiff.pb").read_bytes())
    assert CATEGORICAL in anomalies.anomaly_info
    assert json.loads(execution.custom_properties[TRIGGERS_PROPERTY].string_value)


def test_logs_of_another_model_and_empty_or_missing_folders(taxi, tmp_path):
    config_path, _, version, rows = taxi
    write_logs(tmp_path / "iris", [predict_log("iris", 1, rows[:2], int(time.time()))])
    (tmp_path / "empty").mkdir()
    for folder, message in (
            ("iris", "the logs in {} are of model 'iris', not 'taxi' (serving.model_name)"),
            ("empty", "no request log files (*.tfrecord) in {}"),
            ("missing", "no log folder {}")):
        result, document = _monitor(config_path, tmp_path / folder, tmp_path=tmp_path)
        assert result.exit_code == 2
        assert result.output == f"Error: {message.format(tmp_path / folder)}\n"
        assert document is None


def _available(client) -> list[str]:
    return [s["version"] for s in client.status("taxi") if s["state"] == "AVAILABLE"]


def test_new_data_and_retrain_serve_a_new_blessed_version_and_mlmd_records_why(taxi, tmp_path):
    config_path, config, version, rows = taxi
    logs = tmp_path / "logs"
    write_logs(logs, _traffic(rows, version, int(time.time())))
    with TAXI_CSV.open() as source:
        lines = source.readlines()
    (config.data.path / "more.csv").write_text("".join(lines[:1] + lines[1001:1501]))
    with _serving(config) as (client, _):
        assert [s["version"] for s in client.status("taxi")] == [str(version)]
        result, document = _monitor(config_path, logs, "--retrain", tmp_path=tmp_path)
        assert result.exit_code == 0, result.output
        assert re.search(r"^trigger new_data: data files under \S+ changed since the last run "
                         r"\(.+\): more\.csv$", result.output, re.M), result.output
        assert "  blessed: yes" in result.output
        pushed = int(re.search(r"pushed: version (\d+)", result.output)[1])
        assert pushed > version
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _available(client) != [str(pushed)]:
            time.sleep(0.5)
        assert _available(client) == [str(pushed)]  # the server polled the push folder
        assert {s["version"]: s["state"] for s in client.status("taxi")}[str(version)] == "END"
    execution = monitor_runs(config)[-1]
    [trigger] = json.loads(execution.custom_properties[TRIGGERS_PROPERTY].string_value)
    assert trigger["trigger"] == "new_data" and "more.csv" in trigger["reason"]
    assert execution.custom_properties[RETRAIN_RUN_PROPERTY].string_value == \
        document["retrain_run"]
