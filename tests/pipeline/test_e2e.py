"""`skewless run` end to end on a 2,000-row sample, as a user runs it (a subprocess).

One pipeline (one MLMD store, one push directory) goes through the stories in order: a first
run, cached reruns, data with anomalies, and a threshold no model can meet.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2
from tensorflow.core.protobuf import saved_model_pb2

from skewless.pipeline import build
from skewless.pipeline.config import load_config
from skewless.pipeline.store import connect, is_pushed, latest_output
from skewless.transforms.signatures import MISSING_INT64
from tests.conftest import sample_config_dict, write_config
from tests.pipeline.helpers import assert_offline_report, report_of, skewless, states, versions
from tests.pipeline.parity import (
    materialised_train,
    named_tensors,
    raw_train_examples,
    rows,
    rows_match,
)

pytestmark = pytest.mark.e2e

NODES = [
    build.EXAMPLE_GEN, build.STATISTICS_GEN, build.SCHEMA_GEN, build.EXAMPLE_VALIDATOR,
    build.ANOMALY_GATE, build.ROW_COUNT_CHECK, build.TRANSFORM, build.TRAINER,
    build.BASELINE_MODEL, build.EVALUATOR, build.PUSHER,
]
UP_TO_TRAINER = NODES[:8]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def config_path(workdir, sample_csv) -> Path:
    raw = sample_config_dict(workdir, sample_csv)
    return write_config(workdir / "taxi.yaml", raw)


@pytest.fixture(scope="module")
def first_run(workdir, config_path):
    result = skewless("run", "--config", str(config_path), tmpdir=workdir / "tmp")
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    return result


@pytest.fixture(scope="module")
def config(config_path, first_run):
    return load_config(config_path)


def test_first_run_executes_every_component_and_pushes(first_run, config):
    ran = states(first_run.stdout)
    assert {node: ran.get(node) for node in NODES} == {node: "executed" for node in NODES}
    out = first_run.stdout
    assert "rows: 2000 (source, ExampleGen and statistics agree)" in out
    assert "PASS  AUC" in out and "lower bound 0.6000" in out
    assert "blessed: yes" in out
    [version] = versions(config.model_push_dir)
    assert f"pushed: version {version} at {config.model_push_dir / version}" in out
    # TFX and Beam chatter goes to the log file, not the terminal.
    assert "INFO" not in out and "WARNING" not in first_run.stderr
    [log] = config.log_dir.glob("run-*.log")
    assert "Transform" in log.read_text()


def test_push_dir_holds_one_integer_version_that_loads(first_run, config):
    [version] = versions(config.model_push_dir)  # no hidden staging folder left behind
    assert version.isdigit()
    model = tf.saved_model.load(str(config.model_push_dir / version))
    assert {"serving_default", "serving_tf_example", "transform_features"} <= set(
        model.signatures
    )
    outputs = model.signatures["serving_default"].structured_outputs
    assert set(outputs) == {"probabilities", "classes"}


def test_optional_features_have_signature_defaults(first_run, config):
    [version] = versions(config.model_push_dir)
    proto = saved_model_pb2.SavedModel.FromString(
        (config.model_push_dir / version / "saved_model.pb").read_bytes()
    )
    signature = proto.meta_graphs[0].signature_def["serving_default"]
    assert set(signature.inputs) == set(config.features.raw_names)
    # Columns with missing values in the data may be left out of a request; others may not.
    assert {"company", "pickup_latitude", "dropoff_community_area"} <= set(signature.defaults)
    assert "trip_start_hour" not in signature.defaults
    assert signature.defaults["company"].string_val == [b""]


def test_mlmd_records_executions_artifacts_and_lineage(first_run, config):
    store = connect(config)
    pushed = latest_output(store, config.pipeline.name, build.PUSHER, "PushedModel")
    assert is_pushed(pushed)

    def producer_inputs(artifact) -> dict[str, metadata_store_pb2.Artifact]:
        [event] = [e for e in store.get_events_by_artifact_ids([artifact.id])
                   if e.type == metadata_store_pb2.Event.OUTPUT]
        inputs = [e.artifact_id for e in store.get_events_by_execution_ids([event.execution_id])
                  if e.type == metadata_store_pb2.Event.INPUT]
        return {a.type: a for a in store.get_artifacts_by_id(inputs)}

    pusher_inputs = producer_inputs(pushed)
    assert set(pusher_inputs) == {"Model", "ModelBlessing", "InfraBlessing"}
    trainer_inputs = producer_inputs(pusher_inputs["Model"])
    assert {"Examples", "TransformGraph", "Schema"} <= set(trainer_inputs)
    transform_inputs = producer_inputs(trainer_inputs["TransformGraph"])
    assert {"Examples", "Schema"} <= set(transform_inputs)
    schema_inputs = producer_inputs(transform_inputs["Schema"])
    assert set(schema_inputs) == {"ExampleStatistics"}
    statistics_inputs = producer_inputs(schema_inputs["ExampleStatistics"])
    assert statistics_inputs["Examples"].id == transform_inputs["Examples"].id
    # The Evaluator takes two Models: the candidate ("model") and BaselineModel's output.
    [evaluation] = [e for e in store.get_events_by_artifact_ids([pusher_inputs["ModelBlessing"].id])
                    if e.type == metadata_store_pb2.Event.OUTPUT]
    evaluator_models = {
        e.path.steps[0].key: e.artifact_id
        for e in store.get_events_by_execution_ids([evaluation.execution_id])
        if e.type == metadata_store_pb2.Event.INPUT and e.path.steps[0].key.endswith("model")}
    assert evaluator_models.keys() == {"model", "baseline_model"}
    assert evaluator_models["model"] == pusher_inputs["Model"].id

    context = store.get_context_by_type_and_name("pipeline", config.pipeline.name)
    executions = store.get_executions_by_context(context.id)
    node_types = {e.type.rsplit(".", 1)[-1] for e in executions}
    assert {"CsvExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Transform",
            "Trainer", "Evaluator", "Pusher", "AnomalyGate", "RowCountCheck"} <= node_types


def test_skew_materialised_transform_equals_exported_graph(first_run, config):
    raw = raw_train_examples(config, 500)
    assert len(raw) == 500
    stored, _ = materialised_train(config)
    [version] = versions(config.model_push_dir)
    model = tf.saved_model.load(str(config.model_push_dir / version))
    computed = model.signatures["transform_features"](examples=tf.constant(raw))
    graph = {k: np.reshape(v.numpy(), [500]) for k, v in computed.items() if k in stored}
    assert set(graph) == set(stored)
    assert rows_match(graph, stored).all()
    # The comparison is sharp: a drift of 1e-4 in one z-score is caught.
    drifted = dict(graph, trip_miles_xf=graph["trip_miles_xf"] + 1e-4)
    assert not rows_match(drifted, stored).any()


def test_skew_raw_feature_and_tf_example_signatures_agree(first_run, config):
    raw = raw_train_examples(config, 500)
    [version] = versions(config.model_push_dir)
    model = tf.saved_model.load(str(config.model_push_dir / version))
    by_example = model.signatures["serving_tf_example"](examples=tf.constant(raw))
    serving_default = model.signatures["serving_default"]
    by_features = serving_default(**named_tensors(raw, serving_default))
    np.testing.assert_allclose(
        by_features["probabilities"].numpy(), by_example["probabilities"].numpy(), atol=1e-6
    )
    assert (by_features["classes"].numpy() == by_example["classes"].numpy()).all()
    assert 0.0 < by_example["probabilities"].numpy().std()  # not a constant model


def evaluation_baseline(config) -> tuple[str, str]:
    """The (path, version) of the baseline recorded on the latest evaluation ("" when none)."""
    store = connect(config)
    evaluation = latest_output(store, config.pipeline.name, build.EVALUATOR, "ModelEvaluation")
    props = evaluation.custom_properties
    return props["baseline_path"].string_value, props["baseline_version"].string_value


def test_reruns_are_served_from_cache_and_compare_no_model_with_itself(
    first_run, config, config_path, workdir
):
    before = versions(config.model_push_dir)
    # The first model had nothing to be compared with, and the evaluation says so.
    assert evaluation_baseline(config) == ("", "")
    for _ in range(2):
        rerun = skewless("run", "--config", str(config_path), tmpdir=workdir / "tmp")
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert {n: states(rerun.stdout)[n] for n in NODES} == {n: "cached" for n in NODES}
    assert versions(config.model_push_dir) == before
    assert evaluation_baseline(config) == ("", "")


def test_every_run_leaves_an_offline_report_and_past_runs_can_be_reported(
    first_run, config, config_path, tmp_path
):
    from click.testing import CliRunner

    from skewless.cli import main
    from skewless.pipeline.report import run_ids

    first = report_of(first_run.stdout)
    assert first.parent == config.pipeline.output_dir / "reports"
    figures = ("statistics", "training", "evaluation", "slices")
    page = assert_offline_report(first, figures, (
        "PASS", "AUC", "Blessed", "Pushed version", "None: the data matches the schema"))
    [version] = versions(config.model_push_dir)
    assert f"Pushed version <b>{version}</b>" in page

    oldest = run_ids(connect(config), config.pipeline.name)[0]
    output = tmp_path / "past.html"
    runner = CliRunner()
    past = runner.invoke(main, ["report", "--config", str(config_path), "--run", oldest,
                                "--output", str(output)])
    assert past.exit_code == 0, past.output
    assert past.output.strip() == f"report: {output}"
    assert_offline_report(output, figures, (f"Run {oldest} of pipeline", "Pushed version"))

    unknown = runner.invoke(main, ["report", "--config", str(config_path), "--run", "nope"])
    assert unknown.exit_code == 1
    assert f"Error: no run 'nope' of pipeline '{config.pipeline.name}'; known runs: " in (
        unknown.output)
    assert oldest in unknown.output and len(unknown.output.strip().splitlines()) == 1


def _bad_copy(source: Path, target: Path) -> Path:
    """The sample with a string in the numeric `fare` column and `trip_start_timestamp` dropped."""
    with source.open(newline="") as f:
        rows = list(csv.DictReader(f))
    fields = [c for c in rows[0] if c != "trip_start_timestamp"]
    rows[3]["fare"] = "twelve dollars"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return target


def test_anomalies_stop_the_run_before_the_trainer(first_run, config, workdir, sample_csv):
    before = versions(config.model_push_dir)
    schema = workdir / "curated" / "schema.pbtxt"
    frozen = skewless("schema", "freeze", "--config", str(workdir / "taxi.yaml"),
                      "--output", str(schema), tmpdir=workdir / "tmp")
    assert frozen.returncode == 0, frozen.stderr[-2000:]
    assert schema.is_file() and 'name: "fare"' in schema.read_text()

    bad = _bad_copy(sample_csv, workdir / "bad" / "data.csv")
    raw = sample_config_dict(workdir, bad, schema={"curated": str(schema)})
    result = skewless("run", "--config", str(write_config(workdir / "bad.yaml", raw)),
                      tmpdir=workdir / "tmp")
    assert result.returncode == 1
    ran = states(result.stdout)
    assert ran[build.ANOMALY_GATE] == "failed"
    assert build.TRANSFORM not in ran and build.TRAINER not in ran
    assert "stopped before Transform and Trainer" in result.stderr
    assert "feature fare [train]:" in result.stderr and "FLOAT" in result.stderr
    assert "feature trip_start_timestamp" in result.stderr
    assert versions(config.model_push_dir) == before
    page = assert_offline_report(report_of(result.stderr), ("statistics",), (
        "No evaluation in this run: it stopped before the Evaluator.", "UNEXPECTED_DATA_TYPE"))
    assert "trip_start_timestamp" in page[page.index("<h2>Anomalies"):]


def test_threshold_no_model_can_meet_pushes_nothing(first_run, config, workdir, sample_csv):
    before = versions(config.model_push_dir)
    raw = sample_config_dict(
        workdir, sample_csv,
        evaluation={"thresholds": [{"metric": "AUC", "lower_bound": 1.01}]},
    )
    result = skewless("run", "--config", str(write_config(workdir / "strict.yaml", raw)),
                      tmpdir=workdir / "tmp")
    assert result.returncode == 0, result.stderr[-3000:]
    assert states(result.stdout)[build.TRAINER] == "cached"
    assert states(result.stdout)[build.EVALUATOR] == "executed"
    assert "FAIL  AUC" in result.stdout and "lower bound 1.0100" in result.stdout
    assert "blessed: NO" in result.stdout and "nothing was pushed" in result.stdout
    assert versions(config.model_push_dir) == before


def test_model_worse_than_the_blessed_baseline_is_not_pushed(first_run, config, workdir,
                                                             sample_csv):
    before = versions(config.model_push_dir)
    raw = sample_config_dict(
        workdir, sample_csv,
        model={"train_steps": 2, "eval_steps": 2},
        evaluation={"thresholds": [{"metric": "AUC", "lower_bound": 0.0, "max_decrease": 0.0}]},
    )
    result = skewless("run", "--config", str(write_config(workdir / "weak.yaml", raw)),
                      tmpdir=workdir / "tmp")
    assert result.returncode == 0, result.stderr[-3000:]
    assert states(result.stdout)[build.TRAINER] == "executed"
    [line] = [x for x in result.stdout.splitlines() if x.strip().startswith("FAIL  AUC")]
    assert "baseline" in line, line
    assert "blessed: NO" in result.stdout
    assert versions(config.model_push_dir) == before
    # The baseline was the model TF Serving serves, and the evaluation records which one.
    [served] = before
    assert evaluation_baseline(config) == (str(config.model_push_dir / served), served)


def test_served_real_model_matches_in_process_over_rest_and_grpc(first_run, config):
    """The pipeline's own model (tf.Transform graph, sparse optional inputs, signature defaults)
    served by `skewless serve`: 200 rows, missing values included, REST = gRPC = in-process."""
    from skewless.serving.client import GrpcClient, RestClient
    from skewless.serving.config import single_model_config
    from skewless.serving.server import ModelServer, ServerOptions

    raw = raw_train_examples(config, 200)
    [version] = versions(config.model_push_dir)
    model = tf.saved_model.load(str(config.model_push_dir / version))
    signature = model.signatures["serving_default"]
    tensors = named_tensors(raw, signature)
    assert np.isnan(tensors["pickup_latitude"].numpy()).any()  # rows with missing values
    expected = signature(**tensors)["probabilities"].numpy()
    # Leaving out optional inputs entirely: the signature's defaults mark them missing.
    optional = {"company", "pickup_latitude", "dropoff_community_area"}
    kept = {n: t for n, t in tensors.items() if n not in optional}
    defaults = {"company": b"", "pickup_latitude": float("nan"),
                "dropoff_community_area": MISSING_INT64}
    filled = {**kept, **{n: tf.constant([defaults[n]] * 200, tensors[n].dtype) for n in optional}}
    expected_without = signature(**filled)["probabilities"].numpy()

    server = ModelServer(ServerOptions(
        models=single_model_config(config.serving.model_name, str(config.model_push_dir)),
        port=0, rest_api_port=0,
    )).start()
    try:
        name = config.serving.model_name
        with RestClient(port=server.rest_port) as rest, GrpcClient(port=server.grpc_port) as grpc:
            by_rest = rest.predict(name, rows(tensors))["probabilities"].ravel()
            by_grpc = grpc.predict(name, rows(tensors))["probabilities"].ravel()
            without_rest = rest.predict(name, rows(kept))["probabilities"].ravel()
            without_grpc = grpc.predict(name, rows(kept))["probabilities"].ravel()
    finally:
        server.stop()
    np.testing.assert_allclose(by_rest, expected, atol=1e-6)
    np.testing.assert_allclose(by_grpc, expected, atol=1e-6)
    np.testing.assert_allclose(without_rest, expected_without, atol=1e-6)
    np.testing.assert_allclose(without_grpc, expected_without, atol=1e-6)
    assert not np.allclose(expected_without, expected)  # the omitted features mattered


def test_loadtest_sends_the_eval_split_to_the_pushed_model(first_run, config, config_path,
                                                           tmp_path):
    """`skewless loadtest --config`: rows from the last run's eval split, served without error."""
    import json

    from click.testing import CliRunner

    from skewless.cli import main
    from skewless.pipeline.eval_rows import eval_rows
    from skewless.serving.config import BatchingConfig, single_model_config
    from skewless.serving.server import ModelServer, ServerOptions

    rows = eval_rows(config, limit=20)
    assert len(rows) == 20 and all(set(r) == set(config.features.raw_names) for r in rows)
    server = ModelServer(ServerOptions(
        models=single_model_config(config.serving.model_name, str(config.model_push_dir)),
        port=0, rest_api_port=0, batching=BatchingConfig(max_batch_size=16),
    )).start()
    try:
        result = CliRunner().invoke(main, [
            "loadtest", "--config", str(config_path), "--port", str(server.rest_port),
            "--concurrency", "2", "--step-seconds", "1", "--slo-p99-ms", "5000",
            "--processes", "1", "--output-dir", str(tmp_path)], catch_exceptions=False)
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    [step] = json.loads((tmp_path / "loadtest.json").read_text())["steps"]
    assert step["requests"] > 0 and step["errors"] == 0 and step["rows_per_second"] > 0
