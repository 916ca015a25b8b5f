"""`skewless predict-batch` end to end: a pushed taxi model scores new rows as a user runs it.

One trained and pushed model (`pushed_taxi`) is shared; each scoring job is a subprocess, as a
user runs it, and bad inputs are refused in-process before anything runs.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from click.testing import CliRunner
from ml_metadata.proto import metadata_store_pb2

from skewless.pipeline.batch import BATCH_INFERENCE, batch_pipeline_name
from skewless.pipeline.store import connect
from skewless.transforms.signatures import MISSING_INT64
from tests.conftest import TAXI_CSV
from tests.pipeline.helpers import skewless, write_avro

pytestmark = pytest.mark.e2e

ROWS = 300
LABEL_SOURCE = "tips"  # the derived label's numerator: new data does not have it


def _write_rows(path: Path, skip: int, rows: int, drop: tuple[str, ...] = ()) -> Path:
    """Rows `skip` to `skip + rows` of the bundled data, without the `drop` columns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with TAXI_CSV.open(newline="") as f, path.open("w", newline="") as out:
        reader = csv.DictReader(f)
        names = [n for n in reader.fieldnames if n not in drop]
        writer = csv.DictWriter(out, names, extrasaction="ignore")
        writer.writeheader()
        for i, row in enumerate(reader):
            if i >= skip + rows:
                break
            if i >= skip:
                writer.writerow(row)
    return path


@pytest.fixture(scope="module")
def new_data(tmp_path_factory) -> Path:
    # Rows of the training sample: companies the model knows (a new one is an anomaly).
    return _write_rows(tmp_path_factory.mktemp("new") / "tonight.csv", 500, ROWS,
                       drop=(LABEL_SOURCE,))


@pytest.fixture(scope="module")
def scored(pushed_taxi, new_data, tmp_path_factory):
    """predict-batch with every column kept, Parquet output: (result, output path)."""
    config, _ = pushed_taxi
    output = tmp_path_factory.mktemp("scored") / "predictions.parquet"
    result = skewless("predict-batch", "--config", str(config.source), "--data", str(new_data),
                      "--output", str(output), tmpdir=output.parent / "tmp")
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    return result, output


def _rest_predictions(config, table) -> dict[str, np.ndarray]:
    """The served model's answers for the table's rows over REST (missing as the server wants)."""
    from skewless.serving.client import RestClient
    from skewless.serving.config import single_model_config
    from skewless.serving.server import ModelServer, ServerOptions

    [version] = [p for p in config.model_push_dir.iterdir() if p.name.isdigit()]
    signature = tf.saved_model.load(str(version)).signatures["serving_default"]
    _, specs = signature.structured_input_signature
    missing = {tf.string: "", tf.int64: MISSING_INT64}
    rows = [{name: (row[name] if row[name] is not None
                    else missing.get(spec.dtype, float("nan")))
             for name, spec in specs.items()} for row in table.to_pylist()]
    server = ModelServer(ServerOptions(
        models=single_model_config(config.serving.model_name, str(config.model_push_dir)),
        port=0, rest_api_port=0,
    )).start()
    try:
        with RestClient(port=server.rest_port) as rest:
            return rest.predict(config.serving.model_name, rows)
    finally:
        server.stop()


def test_batch_predictions_equal_online_rest_predictions(pushed_taxi, new_data, scored):
    config, version = pushed_taxi
    result, output = scored
    assert f"with model taxi version {version}" in result.stdout
    assert f"rows in: {ROWS}, rows out: {ROWS}" in result.stdout
    assert f"predictions: {output}" in result.stdout
    assert f"model: taxi version {version}" in result.stdout
    assert "anomalies" not in result.stdout
    assert "ERROR" not in result.stdout + result.stderr
    table = pq.read_table(output)
    with new_data.open() as f:
        inputs = next(csv.reader(f))
    assert table.num_rows == ROWS
    assert table.column_names == sorted(inputs) + ["classes", "probabilities"]
    # Rows with missing values, of a number and of a string the model takes.
    assert table.column("dropoff_latitude").null_count > 0
    assert table.column("company").null_count > 0
    online = _rest_predictions(config, table)
    np.testing.assert_allclose(table.column("probabilities").to_numpy(),
                               online["probabilities"].ravel(), atol=1e-6)
    np.testing.assert_array_equal(table.column("classes").to_numpy(), online["classes"].ravel())
    assert not list(output.parent.glob(".*.tmp"))


def test_mlmd_links_the_job_to_model_version_and_input_data(pushed_taxi, new_data, scored):
    config, version = pushed_taxi
    _, output = scored
    store = connect(config)
    context = store.get_context_by_type_and_name(
        "node", f"{batch_pipeline_name(config)}.{BATCH_INFERENCE}")
    jobs = []
    for execution in store.get_executions_by_context(context.id):
        by_type = {}
        for event in store.get_events_by_execution_ids([execution.id]):
            [artifact] = store.get_artifacts_by_id([event.artifact_id])
            [kind] = store.get_artifact_types_by_id([artifact.type_id])
            by_type[kind.name] = (event.type, artifact)
        jobs.append(by_type)
    [by_type] = [job for job in jobs if job["InferenceResult"][1].custom_properties[
        "output_path"].string_value == str(output)]
    kind, model = by_type["PushedModel"]
    assert kind == metadata_store_pb2.Event.INPUT
    assert model.custom_properties["pushed_version"].int_value == version
    assert model.custom_properties["pushed_destination"].string_value == str(
        config.model_push_dir / str(version))
    kind, examples = by_type["Examples"]
    assert kind == metadata_store_pb2.Event.INPUT
    [producer] = [e for e in store.get_events_by_artifact_ids([examples.id])
                  if e.type == metadata_store_pb2.Event.OUTPUT]
    [gen] = store.get_executions_by_id([producer.execution_id])
    assert gen.custom_properties["input_base"].string_value == str(new_data.parent)
    kind, predictions = by_type["InferenceResult"]
    assert kind == metadata_store_pb2.Event.OUTPUT
    assert predictions.custom_properties["output_path"].string_value == str(output)
    assert predictions.custom_properties["rows_out"].int_value == ROWS


def _with_values(source: Path, target: Path, column: str, value: str, every: int) -> Path:
    """A copy with `value` in `column` of every `every`-th row."""
    with source.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows[::every]:
        row[column] = value
    with target.open("w", newline="") as out:
        writer = csv.DictWriter(out, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return target


def test_anomalies_stop_the_job_with_a_report_and_nothing_written(pushed_taxi, new_data,
                                                                   tmp_path):
    config, version = pushed_taxi
    data = _with_values(new_data, tmp_path / "bad.csv", "trip_miles", "far", every=10)
    output = tmp_path / "out.parquet"
    result = skewless("predict-batch", "--config", str(config.source), "--data", str(data),
                      "--output", str(output), tmpdir=tmp_path / "tmp")
    assert result.returncode == 1
    assert "Data anomalies found: nothing was scored (1 anomalies)." in result.stderr
    assert "feature trip_miles [batch]: UNEXPECTED_DATA_TYPE" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: data does not match the schema of model version {version} in serving; fix "
        "the data, or pass --allow-anomalies")
    assert "BatchInference" not in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "tmp"]


def test_allowed_anomalies_avro_in_kept_columns_as_csv_out(pushed_taxi, new_data, tmp_path):
    """A company the model never saw is an anomaly; allowed, it is scored as out of vocabulary.
    The input is Avro, the output CSV with two kept columns, replacing yesterday's file."""
    config, version = pushed_taxi
    csv_copy = _with_values(new_data, tmp_path / "new-company.csv", "company",
                            "Nightly Cab Co", every=7)
    data = tmp_path / "avro" / "tonight.avro"  # Avro input, as a warehouse export
    data.parent.mkdir()
    write_avro(pacsv.read_csv(csv_copy, convert_options=pacsv.ConvertOptions(
        strings_can_be_null=True)), data)
    output = tmp_path / "predictions.csv"
    output.write_text("yesterday\n")
    result = skewless("predict-batch", "--config", str(config.source), "--data", str(data),
                      "--output", str(output), "--keep", "trip_start_hour", "--keep", "company",
                      "--model-version", str(version), "--overwrite", "--allow-anomalies",
                      tmpdir=tmp_path / "tmp")
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    assert f"rows in: {ROWS}, rows out: {ROWS}" in result.stdout
    assert "anomalies: 1 allowed (--allow-anomalies): company" in result.stdout
    table = pacsv.read_csv(output)
    assert table.column_names == ["trip_start_hour", "company", "classes", "probabilities"]
    assert table.num_rows == ROWS
    assert table.column("company").to_pylist().count("Nightly Cab Co") == len(range(0, ROWS, 7))


def _invoke(*args: str):
    from skewless.cli import main

    return CliRunner().invoke(main, ["predict-batch", *args])


def _one_line_error(result, expected: str) -> None:
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert expected in lines[0], lines[0]


def test_data_missing_a_feature_the_model_needs(pushed_taxi, tmp_path):
    config, version = pushed_taxi
    data = _write_rows(tmp_path / "no-fare.csv", 5000, 20, drop=(LABEL_SOURCE, "fare"))
    output = tmp_path / "out.parquet"
    result = _invoke("--config", str(config.source), "--data", str(data), "--output", str(output))
    _one_line_error(result, f"has no column 'fare', which model version {version} needs")
    assert not output.exists()


def test_model_version_that_does_not_exist(pushed_taxi, new_data, tmp_path):
    config, version = pushed_taxi
    output = tmp_path / "out.parquet"
    result = _invoke("--config", str(config.source), "--data", str(new_data), "--output",
                     str(output), "--model-version", "7")
    _one_line_error(result, f"model version 7 does not exist in {config.model_push_dir} "
                            f"(pushed: {version})")
    result = _invoke("--config", str(config.source), "--data", str(new_data), "--output",
                     str(output), "--label", "stable")
    _one_line_error(result, "deployment.version_labels: no label 'stable' (labels: none)")
    assert not output.exists()


def test_unreadable_file(pushed_taxi, tmp_path):
    config, _ = pushed_taxi
    data = tmp_path / "tonight.parquet"
    data.write_text("pickup_latitude,fare\n41.9,12.5\n")  # CSV text under a Parquet name
    output = tmp_path / "out.parquet"
    result = _invoke("--config", str(config.source), "--data", str(data), "--output", str(output))
    _one_line_error(result, f"--data: cannot read {data} as parquet")
    assert not output.exists()


def test_existing_output_is_refused_without_overwrite(pushed_taxi, new_data, tmp_path):
    config, _ = pushed_taxi
    output = tmp_path / "out.parquet"
    output.write_text("yesterday's predictions")
    result = _invoke("--config", str(config.source), "--data", str(new_data), "--output",
                     str(output))
    _one_line_error(result, f"--output: {output} exists; pass --overwrite to replace it")
    assert output.read_text() == "yesterday's predictions"
