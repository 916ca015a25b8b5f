"""`skewless compile`: the KFP v2 PipelineSpec that Kubeflow Pipelines runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from skewless.pipeline.config import ConfigError, load_config, parse_config
from tests.conftest import REPO, TAXI_CONFIG
from tests.kubeflow.compiled import assert_kfp_takes, compile_with_cli, normalised

COMMITTED = REPO / "kubeflow" / "taxi-pipeline.yaml"


def _variant(tmp_path: Path, **sections) -> object:
    """configs/taxi.yaml with sections updated, loaded as a config in tmp_path."""
    raw = yaml.safe_load(TAXI_CONFIG.read_text())
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    raw["data"]["path"] = str(REPO / "data" / "taxi" / "data.csv")
    return parse_config(raw, tmp_path / "variant.yaml")


def _compile(config, folder: Path, target: str = "kubeflow") -> tuple[str, list[dict]]:
    from skewless.pipeline.kubeflow import compile_pipeline

    path = compile_pipeline(config, folder, target)
    text = path.read_text()
    return text, list(yaml.safe_load_all(text)) if target == "kubeflow" else [json.loads(text)]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, str, dict, dict]:
    """configs/taxi.yaml compiled as `skewless compile` does: (file, text, spec, platform)."""
    return compile_with_cli(TAXI_CONFIG, tmp_path_factory.mktemp("compiled"), "taxi-pipeline.yaml")


def _cli():
    from skewless.cli import main

    return main


def test_compile_regenerates_the_committed_spec(compiled):
    _, text, _, _ = compiled
    assert COMMITTED.is_file(), "run: skewless compile --config configs/taxi.yaml"
    assert normalised(text) == normalised(COMMITTED.read_text()), (
        "kubeflow/taxi-pipeline.yaml is stale: run skewless compile --config configs/taxi.yaml"
    )


def test_spec_parses_strictly_and_loads_in_kfp(compiled):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    path, _, spec, platform = compiled
    assert_kfp_takes(path, spec, platform, "taxi", {"data_root", "train_args", "eval_args"})
    broken = {**spec, "deploymentSpecs": spec["deploymentSpec"]}
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict(broken, pipeline_spec_pb2.PipelineSpec())


def test_kfp_loaders_reject_the_vertex_json(tmp_path):
    from kfp.client import client

    vertex = _variant(tmp_path, kubeflow={"pipeline_root": "gs://bucket/root"})
    vertex_path = tmp_path / "out" / "taxi-pipeline.json"
    _compile(vertex, vertex_path.parent, "vertex")
    with pytest.raises(ValueError):
        client._extract_pipeline_yaml(str(vertex_path))


def _local_edges() -> tuple[set[str], set[tuple[str, str]]]:
    from skewless.pipeline.build import create_pipeline

    pipeline = create_pipeline(load_config(TAXI_CONFIG, check_data=False))
    nodes = {c.id for c in pipeline.components}
    edges = {(up.id, c.id) for c in pipeline.components for up in c.upstream_nodes}
    return nodes, edges


def _compiled_edges(spec: dict) -> tuple[set[str], set[tuple[str, str]]]:
    tasks = spec["root"]["dag"]["tasks"]
    nodes = set(tasks)
    edges = {(up, t) for t, body in tasks.items() for up in body.get("dependentTasks", [])}
    return nodes, edges


def test_tasks_and_dependencies_are_the_local_pipelines(compiled):
    _, _, spec, _ = compiled
    local_nodes, local_edges = _local_edges()
    nodes, edges = _compiled_edges(spec)
    assert nodes == local_nodes
    assert edges == local_edges
    assert ("AnomalyGate", "Transform") in edges and ("RowCountCheck", "Transform") in edges
    assert ("Trainer", "BaselineModel") in edges and ("BaselineModel", "Evaluator") in edges
    assert ("Trainer", "InfraValidator") in edges and ("InfraValidator", "Pusher") in edges


def test_every_task_runs_the_project_image_with_installed_code(compiled):
    _, text, spec, _ = compiled
    config = load_config(TAXI_CONFIG, check_data=False)
    containers = [e["container"] for e in spec["deploymentSpec"]["executors"].values()
                  if "container" in e]
    assert len(containers) == len(spec["deploymentSpec"]["executors"]) == 12
    assert {c["image"] for c in containers} == {config.kubeflow.image}
    # TFX's entrypoint behind the shim that reads open-source KFP's executor input.
    assert {tuple(c["command"]) for c in containers} == {
        ("python", "-m", "skewless.pipeline.kubeflow_entrypoint")}
    classes = {c["args"][c["args"].index("--executor_class_path") + 1] for c in containers}
    assert {"skewless.components.pusher.executor.Executor",
            "skewless.components.anomaly_gate.executor.Executor",
            "skewless.components.baseline_model.executor.Executor",
            "skewless.components.evaluator.executor.Executor",
            "skewless.components.infra_validator.executor.Executor"} <= classes
    tasks = spec["root"]["dag"]["tasks"]

    def constant(task, name):
        return tasks[task]["inputs"]["parameters"][name]["runtimeValue"]["constant"]

    # Import paths resolved in the image, not a module file packaged from this machine.
    assert constant("Trainer", "run_fn") == "skewless.transforms.training.run_fn"
    assert constant("Transform", "preprocessing_fn") == (
        "skewless.transforms.preprocessing.preprocessing_fn")
    for task in ("Trainer", "Transform"):
        assert not {"module_file", "module_path"} & set(tasks[task]["inputs"]["parameters"])
    assert "_wheels" not in text


def test_no_path_of_the_compiling_machine_in_the_spec(compiled):
    _, text, _, _ = compiled
    for local in (str(REPO), str(Path.home()), "/tmp/", "metadata.sqlite", "artifacts/"):
        assert local not in text
    pushed = json.loads(
        compiled[2]["root"]["dag"]["tasks"]["Pusher"]["inputs"]["parameters"]
        ["push_destination"]["runtimeValue"]["constant"]
    )
    assert pushed == {"filesystem": {"base_directory": "/mnt/models/taxi"}}
    baseline = compiled[2]["root"]["dag"]["tasks"]["BaselineModel"]["inputs"]["parameters"]
    assert baseline["model_push_dir"]["runtimeValue"]["constant"] == "/mnt/models/taxi"


def test_example_gen_runs_its_driver_in_the_task_and_is_never_cached(compiled):
    _, _, spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    assert not any("lifecycle" in e["container"] for e in executors.values())
    assert executors["ExampleGen_executor"]["container"]["args"][0] == "--example_gen_driver"
    others = [e for label, e in executors.items() if label != "ExampleGen_executor"]
    assert not any("--example_gen_driver" in e["container"]["args"] for e in others)
    caching = {t: body["cachingOptions"] for t, body in spec["root"]["dag"]["tasks"].items()}
    assert caching.pop("ExampleGen") == {"enableCache": False}
    assert set(map(str, caching.values())) == {str({"enableCache": True})}


def test_a_local_path_in_the_cluster_section_is_refused(tmp_path):
    from skewless.pipeline.kubeflow import compile_pipeline

    local_data = str(REPO / "data" / "taxi")
    config = _variant(tmp_path, kubeflow={"data_root": local_data, "volumes": []})
    with pytest.raises(ConfigError, match=r"data\.path: the compiled pipeline would name"):
        compile_pipeline(config, tmp_path / "out")
    assert not (tmp_path / "out" / "taxi-pipeline.yaml").exists()


def test_runtime_parameters_feed_example_gen_row_check_and_trainer(compiled):
    _, _, spec, _ = compiled
    declared = spec["root"]["inputDefinitions"]["parameters"]
    assert declared["data_root"]["defaultValue"] == "/mnt/data/taxi"
    assert json.loads(declared["train_args"]["defaultValue"]) == {"num_steps": 1000}
    assert json.loads(declared["eval_args"]["defaultValue"]) == {"num_steps": 100}
    tasks = spec["root"]["dag"]["tasks"]

    def source(task, name):
        return tasks[task]["inputs"]["parameters"][name].get("componentInputParameter")

    assert source("ExampleGen", "input_base") == "data_root"
    assert source("RowCountCheck", "input_base") == "data_root"
    assert source("Trainer", "train_args") == "train_args"
    assert source("Trainer", "eval_args") == "eval_args"


def test_volumes_are_mounted_into_every_container_task(compiled):
    _, _, spec, platform = compiled
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    containers = {k for k, v in spec["deploymentSpec"]["executors"].items() if "container" in v}
    assert set(executors) == containers
    for mounts in executors.values():
        assert {(m["constant"], m["mountPath"]) for m in mounts["pvcMount"]} == {
            ("skewless-data", "/mnt/data"), ("skewless-models", "/mnt/models")}


def test_config_values_change_the_spec(tmp_path):
    config = _variant(
        tmp_path,
        model={"train_steps": 77, "eval_steps": 7},
        kubeflow={"image": "registry.example.com/skewless/pipeline:2.0",
                  "beam_args": ["--runner=DataflowRunner", "--project=p", "--region=r",
                                "--temp_location=gs://b/tmp"]},
    )
    _, (spec, _) = _compile(config, tmp_path / "out")
    declared = spec["root"]["inputDefinitions"]["parameters"]
    assert json.loads(declared["train_args"]["defaultValue"]) == {"num_steps": 77}
    assert json.loads(declared["eval_args"]["defaultValue"]) == {"num_steps": 7}
    containers = [e["container"] for e in spec["deploymentSpec"]["executors"].values()
                  if "container" in e]
    assert {c["image"] for c in containers} == {"registry.example.com/skewless/pipeline:2.0"}
    for container in containers:
        assert "--runner=DataflowRunner" in container["args"]
        assert "--direct_running_mode=in_memory" not in container["args"]


def _plan(spec: dict, task: str) -> dict:
    """The feature plan a compiled task carries in its custom_config."""
    parameters = spec["root"]["dag"]["tasks"][task]["inputs"]["parameters"]
    return json.loads(parameters["custom_config"]["runtimeValue"]["constant"])[
        "skewless_feature_plan"]


def test_regression_spec_carries_the_task_and_its_evaluation(tmp_path):
    from tests.conftest import DIABETES_CONFIG

    config = load_config(DIABETES_CONFIG, check_data=False)
    _, (spec, _) = _compile(config, tmp_path / "out")
    for task in ("Transform", "Trainer"):
        plan = _plan(spec, task)
        assert plan["task"] == {"kind": "regression", "label_mean": 0.0, "label_std": 1.0}
        assert plan["label"] == plan["label_column"] == "progression"
    evaluator = spec["root"]["dag"]["tasks"]["Evaluator"]["inputs"]["parameters"]
    eval_config = json.loads(evaluator["eval_config"]["runtimeValue"]["constant"])
    [model_spec] = eval_config["model_specs"]
    assert model_spec["prediction_key"] == "predictions"
    assert model_spec["example_weight_key"] == "__weight__"
    metrics = {m["class_name"]: m for m in eval_config["metrics_specs"][0]["metrics"]}
    assert {"MeanSquaredError", "RootMeanSquaredError", "MeanAbsoluteError",
            "MeanAbsolutePercentageError", "Calibration"} <= set(metrics)
    [threshold] = metrics["MeanAbsoluteError"]["per_slice_thresholds"]
    assert threshold["threshold"]["change_threshold"] == {
        "direction": "LOWER_IS_BETTER", "absolute": 5.0}
    assert threshold["threshold"]["value_threshold"]["upper_bound"] == 60.0


def test_multiclass_spec_carries_the_classes(tmp_path):
    from tests.conftest import IRIS_CONFIG

    config = load_config(IRIS_CONFIG, check_data=False)
    _, (spec, _) = _compile(config, tmp_path / "out")
    assert _plan(spec, "Trainer")["task"] == {
        "kind": "multiclass", "classes": ["setosa", "versicolor", "virginica"]}
    # Without the data on this machine, the classes must be listed in the config.
    raw = yaml.safe_load(IRIS_CONFIG.read_text())
    raw["data"]["path"] = str(tmp_path / "elsewhere" / "data.csv")
    with pytest.raises(ConfigError, match=r"label\.classes: list the classes; the compiled "
                                          r"pipeline carries them"):
        _compile(parse_config(raw, tmp_path / "iris.yaml"), tmp_path / "out2")


def test_vertex_target_writes_a_pipeline_job(tmp_path):
    config = _variant(tmp_path, kubeflow={"pipeline_root": "gs://bucket/root"})
    _, (job,) = _compile(config, tmp_path / "out", "vertex")
    assert job["displayName"] == "taxi"
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://bucket/root"
    assert job["runtimeConfig"]["parameterValues"]["data_root"] == "/mnt/data/taxi"
    assert "labels" not in job
    with pytest.raises(ConfigError, match=r"kubeflow\.pipeline_root: Vertex AI needs a gs://"):
        _compile(_variant(tmp_path), tmp_path / "out2", "vertex")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"push_dir": "gs://bucket/models"}, r"kubeflow\.push_dir: the Pusher renames folders"),
        ({"data_root": "data/taxi"}, r"kubeflow\.data_root: expected an absolute cluster path"),
        ({"push_dir": "/srv/models"}, r"kubeflow\.push_dir: /srv/models is under no volumes"),
        ({"image": "Skewless Pipeline"}, r"kubeflow\.image: expected an image reference such "
                                         r"as registry\.example\.com/team/image:tag"),
        ({"beam_args": ["runner=DataflowRunner"]}, r"kubeflow\.beam_args: expected --flag"),
        ({"imagee": "x"}, r"kubeflow\.imagee: unknown key"),
    ],
)
def test_bad_kubeflow_section_gives_one_line_errors(tmp_path, section, message):
    with pytest.raises(ConfigError, match=message) as error:
        _variant(tmp_path, kubeflow=section)
    assert "\n" not in str(error.value)
    assert str(error.value).startswith(str(tmp_path / "variant.yaml"))


def test_push_volume_must_be_the_one_serving_reads(tmp_path):
    from skewless.pipeline.kubeflow import check_cluster_config

    config = _variant(tmp_path, deployment={"model_volume": {"claim_name": "other-models"}})
    with pytest.raises(ConfigError, match=r"kubeflow\.push_dir: .* 'skewless-models' .* "
                                          r"'other-models'"):
        check_cluster_config(config)


def test_compile_cli_reports_config_errors_in_one_line(tmp_path):
    raw = yaml.safe_load(TAXI_CONFIG.read_text())
    raw["kubeflow"]["pipeline_root"] = "relative/root"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(_cli(), ["compile", "--config", str(bad),
                                         "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {bad}: kubeflow.pipeline_root: expected an absolute cluster path or a URI like "
        "gs://bucket/dir, got 'relative/root'"
    ]


def test_tuning_puts_the_tuner_between_transform_and_trainer(tmp_path):
    from skewless.pipeline.build import create_pipeline
    from tests.conftest import IRIS_CONFIG

    raw = yaml.safe_load(IRIS_CONFIG.read_text())
    raw["label"]["classes"] = ["setosa", "versicolor", "virginica"]
    raw["tuning"] = {"max_trials": 4, "train_steps": 50,
                     "search_space": {"units": [8, 16], "learning_rate": {"min": 0.001,
                                                                          "max": 0.1}}}
    config = parse_config(raw, IRIS_CONFIG)
    _, (spec, _) = _compile(config, tmp_path / "out")
    nodes, edges = _compiled_edges(spec)
    local = create_pipeline(config)
    assert nodes == {c.id for c in local.components}
    assert edges == {(up.id, c.id) for c in local.components for up in c.upstream_nodes}
    assert {("Transform", "Tuner"), ("SchemaGen", "Tuner"), ("Tuner", "Trainer")} <= edges
    tuner = spec["root"]["dag"]["tasks"]["Tuner"]
    assert tuner["inputs"]["artifacts"]["examples"]["taskOutputArtifact"] == {
        "outputArtifactKey": "transformed_examples", "producerTask": "Transform"}
    assert tuner["inputs"]["artifacts"]["transform_graph"]["taskOutputArtifact"][
        "producerTask"] == "Transform"
    trainer = spec["root"]["dag"]["tasks"]["Trainer"]
    assert trainer["inputs"]["artifacts"]["hyperparameters"]["taskOutputArtifact"] == {
        "outputArtifactKey": "best_hyperparameters", "producerTask": "Tuner"}
    parameters = tuner["inputs"]["parameters"]
    assert parameters["tuner_fn"]["runtimeValue"]["constant"] == (
        "skewless.transforms.tuning.tuner_fn")
    assert json.loads(parameters["train_args"]["runtimeValue"]["constant"]) == {"num_steps": 50}
    search = json.loads(parameters["custom_config"]["runtimeValue"]["constant"])["skewless_tuning"]
    assert search["max_trials"] == 4
    assert search["search_space"]["units"] == {"values": [8, 16]}
    label = spec["components"][tuner["componentRef"]["name"]]["executorLabel"]
    executor = spec["deploymentSpec"]["executors"][label]["container"]
    assert executor["args"][executor["args"].index("--executor_class_path") + 1] == (
        "skewless.components.tuner.executor.Executor")
