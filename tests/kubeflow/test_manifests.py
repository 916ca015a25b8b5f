"""`skewless manifests`: TensorFlow Serving on Kubernetes, and the files it shares with serve."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from skewless.pipeline.config import ConfigError, load_config, parse_config
from skewless.pipeline.manifests import manifest_files, write_manifests
from skewless.serving import config as serve_config
from skewless.serving import monitoring_config_pb2, session_bundle_config_pb2
from tests.conftest import REPO, TAXI_CONFIG

COMMITTED = REPO / "kubeflow" / "serving"
K8S_VERSION = kubernetes_validate.latest_version()
KUBECTL = "/usr/bin/kubectl"  # kubectl 1.32 with kustomize v5.5 (.ci/run checks it is there)


def kustomize(folder: Path) -> list[dict]:
    """The resources ``kubectl kustomize`` renders an overlay to, as a cluster receives them."""
    done = subprocess.run([KUBECTL, "kustomize", str(folder)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return [r for r in yaml.safe_load_all(done.stdout) if r]


def _variant(tmp_path: Path, **sections):
    raw = yaml.safe_load(TAXI_CONFIG.read_text())
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return parse_config(raw, tmp_path / "variant.yaml")


@pytest.fixture(scope="module")
def taxi():
    return load_config(TAXI_CONFIG, check_data=False)


@pytest.fixture(scope="module")
def rendered(taxi, tmp_path_factory) -> dict[str, list[dict]]:
    folder = tmp_path_factory.mktemp("manifests")
    write_manifests(taxi, folder)
    return {p: kustomize(folder / "overlays" / p) for p in ("gpu", "cpu")}


def _one(resources: list[dict], kind: str) -> dict:
    [resource] = [r for r in resources if r["kind"] == kind]
    return resource


def test_manifests_regenerate_the_committed_files(taxi):
    generated = manifest_files(taxi)
    committed = {str(p.relative_to(COMMITTED)): p.read_text()
                 for p in sorted(COMMITTED.rglob("*")) if p.is_file()}
    assert committed == generated, (
        "kubeflow/serving is stale: run skewless manifests --config configs/taxi.yaml")


@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_overlays_validate_strictly_against_kubernetes_schemas(rendered, overlay):
    resources = rendered[overlay]
    assert sorted(r["kind"] for r in resources) == [
        "ConfigMap", "ConfigMap", "Deployment", "HorizontalPodAutoscaler",
        "PersistentVolumeClaim", "Service"]
    for resource in resources:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_config_maps_get_hash_suffixes_that_the_deployment_mounts(rendered, overlay):
    maps = [r["metadata"]["name"] for r in rendered[overlay] if r["kind"] == "ConfigMap"]
    assert maps and all(re.fullmatch(r"[a-z0-9-]+-[a-z0-9]{10}", name) for name in maps), maps
    pod = _one(rendered[overlay], "Deployment")["spec"]["template"]["spec"]
    mounted = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    assert mounted == set(maps)


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(
            containerPot=8500),
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"].update(
            periodSeconds="10"),
        lambda d: d["spec"].pop("selector"),
    ],
    ids=["misspelled-field", "string-for-integer", "missing-selector"],
)
def test_a_broken_manifest_fails_validation(rendered, break_it):
    deployment = copy.deepcopy(_one(rendered["gpu"], "Deployment"))
    break_it(deployment)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def _container(resources):
    return _one(resources, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def _flags(container) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])


def test_gpu_overlay_runs_tf_serving_gpu_with_numeric_gpu_limits(rendered, taxi):
    container = _container(rendered["gpu"])
    assert container["image"] == "tensorflow/serving:2.16.1-gpu"
    resources = container["resources"]
    gpus = resources["limits"]["nvidia.com/gpu"]
    assert type(gpus) is int and gpus == taxi.deployment.gpu.gpus == 1
    assert resources["requests"] == {"cpu": "4", "memory": "8Gi"}
    pod = _one(rendered["gpu"], "Deployment")["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
        pod["tolerations"])


def test_cpu_overlay_has_no_gpu(rendered):
    container = _container(rendered["cpu"])
    assert container["image"] == "tensorflow/serving:2.16.1"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "tolerations" not in _one(rendered["cpu"], "Deployment")["spec"]["template"]["spec"]


@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_probes_ports_and_flags(rendered, overlay):
    container = _container(rendered[overlay])
    flags = _flags(container)
    assert flags["port"] == "8500" and flags["rest_api_port"] == "8501"
    assert flags["enable_batching"] == "true"
    assert int(flags["model_config_file_poll_wait_seconds"]) == 60
    for probe in ("readinessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get == {"path": "/v1/models/taxi", "port": 8501}
    assert container["livenessProbe"]["tcpSocket"]["port"] == 8500
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert all(type(v) is int for k, v in container[probe].items() if k.endswith(
            ("Seconds", "Threshold")))
    service = _one(rendered[overlay], "Service")
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} == {
        ("grpc", 8500), ("http", 8501)}
    assert service["spec"]["selector"].items() <= (
        _one(rendered[overlay], "Deployment")["spec"]["template"]["metadata"]["labels"].items())
    hpa = _one(rendered[overlay], "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == _one(rendered[overlay], "Deployment")[
        "metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)


@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_mounted_config_files_are_the_generated_ones(rendered, overlay):
    resources = rendered[overlay]
    deployment = _one(resources, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    maps = {r["metadata"]["name"]: r["data"] for r in resources if r["kind"] == "ConfigMap"}
    flags = _flags(container)
    served = {}
    for flag in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        folder, _, name = flags[flag].rpartition("/")
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == folder]
        config_map = volumes[mount["name"]]["configMap"]["name"]
        served[name] = maps[config_map][name]
    assert served["models.config"] == (COMMITTED / "base" / "models.config").read_text()
    assert served["monitoring.config"] == (COMMITTED / "base" / "monitoring.config").read_text()
    assert served["batching_parameters.txt"] == (
        COMMITTED / "overlays" / overlay / "batching_parameters.txt").read_text()
    [models_mount] = [m for m in container["volumeMounts"] if m["name"] == "models"]
    claim = volumes["models"]["persistentVolumeClaim"]["claimName"]
    assert claim == _one(resources, "PersistentVolumeClaim")["metadata"]["name"]
    models = text_format.Parse(served["models.config"], model_server_config_pb2.ModelServerConfig())
    assert models.model_config_list.config[0].base_path.startswith(models_mount["mountPath"] + "/")


def test_pushed_versions_land_where_serving_reads_them(taxi):
    from skewless.pipeline.kubeflow import cluster_model_push_dir
    from skewless.pipeline.manifests import cluster_model_base_path

    # Pipeline side: /mnt/models/taxi on claim skewless-models mounted at /mnt/models;
    # serving side: the same claim mounted at /models.
    assert cluster_model_push_dir(taxi) == "/mnt/models/taxi"
    assert cluster_model_base_path(taxi) == "/models/taxi"


def test_generated_files_parse_with_tf_serving_protos_and_serve_loaders(taxi, tmp_path):
    files = manifest_files(taxi)
    models = text_format.Parse(files["base/models.config"],
                               model_server_config_pb2.ModelServerConfig())
    [model] = models.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == (
        "taxi", "/models/taxi", "tensorflow")
    assert model.model_version_policy.latest.num_versions == 1
    for name, message in (("overlays/gpu/batching_parameters.txt",
                           session_bundle_config_pb2.BatchingParameters),
                          ("base/monitoring.config", monitoring_config_pb2.MonitoringConfig)):
        text_format.Parse(files[name], message())
    for name, text in files.items():
        (tmp_path / name.replace("/", "_")).write_text(text)
    gpu = serve_config.load_batching_parameters_file(
        str(tmp_path / "overlays_gpu_batching_parameters.txt"))
    assert (gpu.num_batch_threads, gpu.max_batch_size, gpu.batch_timeout_micros,
            gpu.max_enqueued_batches) == (4, 512, 2000, 4)
    cpu = serve_config.load_batching_parameters_file(
        str(tmp_path / "overlays_cpu_batching_parameters.txt"))
    assert (cpu.num_batch_threads, cpu.max_batch_size) == (2, 128)
    monitoring = serve_config.load_monitoring_config_file(str(tmp_path / "base_monitoring.config"))
    assert monitoring.prometheus_enabled and monitoring.prometheus_path == (
        "/monitoring/prometheus/metrics")
    [served] = serve_config.load_model_config_file(str(tmp_path / "base_models.config"))
    assert served.name == "taxi" and served.base_path == "/models/taxi"


def test_config_values_change_the_files(tmp_path):
    config = _variant(tmp_path, deployment={
        "tf_serving_version": "2.17.0",
        "version_policy": "specific", "versions": [3, 5], "version_labels": {"stable": 3},
        "gpu": {"batching": {"num_batch_threads": 8, "max_batch_size": 256,
                             "batch_timeout_micros": 5000, "max_enqueued_batches": 8,
                             "allowed_batch_sizes": [64, 128, 256]},
                "requests": {"cpu": "8", "memory": "16Gi"},
                "limits": {"cpu": "8", "memory": "16Gi"}, "gpus": 2},
    })
    files = manifest_files(config)
    batching = text_format.Parse(files["overlays/gpu/batching_parameters.txt"],
                                 session_bundle_config_pb2.BatchingParameters())
    assert batching.max_batch_size.value == 256
    assert list(batching.allowed_batch_sizes) == [64, 128, 256]
    models = text_format.Parse(files["base/models.config"],
                               model_server_config_pb2.ModelServerConfig())
    [model] = models.model_config_list.config
    assert list(model.model_version_policy.specific.versions) == [3, 5]
    assert dict(model.version_labels) == {"stable": 3}
    patch = yaml.safe_load(files["overlays/gpu/deployment-patch.yaml"])
    limits = patch["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 2
    assert "newTag: 2.17.0-gpu" in files["overlays/gpu/kustomization.yaml"]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"gpu": {"batching": {"num_batch_threads": 16, "max_batch_size": 512,
                               "batch_timeout_micros": 2000, "max_enqueued_batches": 4},
                  "requests": {"cpu": "4", "memory": "8Gi"},
                  "limits": {"cpu": "4", "memory": "8Gi"}, "gpus": 1}},
         r"deployment\.gpu\.batching\.num_batch_threads: 16 threads exceed the CPU limit"),
        ({"cpu": {"batching": {"num_batch_threads": 2, "max_batch_size": 128,
                               "batch_timeout_micros": 0, "max_enqueued_batches": 2,
                               "allowed_batch_sizes": [32, 64]},
                  "requests": {"cpu": "2", "memory": "2Gi"},
                  "limits": {"cpu": "2", "memory": "4Gi"}}},
         r"deployment\.cpu\.batching\.allowed_batch_sizes: expected increasing sizes ending"),
        ({"version_policy": "specific"}, r"deployment\.versions: give versions exactly when"),
        ({"replicas": {"min": 3, "max": 2}}, r"deployment\.replicas\.max: 2 is below min"),
        ({"tf_serving_version": "latest"},
         r"deployment\.tf_serving_version: expected a version such as 2\.16\.1, got 'latest'"),
        ({"model_volume": {"claim_name": "Models_PVC"}},
         r"deployment\.model_volume\.claim_name: expected a Kubernetes name: lowercase letters, "
         r"digits and '-', starting and ending with a letter or digit, at most 63 characters, "
         r"got 'Models_PVC'"),
        ({"request_logging": {"sampling_rate": 1.5}},
         r"deployment\.request_logging\.sampling_rate: .*less than or equal to 1"),
    ],
)
def test_bad_deployment_section_gives_one_line_errors(tmp_path, section, message):
    with pytest.raises(ConfigError, match=message) as error:
        _variant(tmp_path, deployment=section)
    assert "\n" not in str(error.value)


def test_request_logging_runs_skewless_serve_with_a_log_volume(tmp_path):
    from skewless.serving.cli import serve

    config = _variant(tmp_path, deployment={"request_logging": {"sampling_rate": 0.25}},
                      kubeflow={"image": "registry.example.com/skewless:1.2.0"})
    folder = tmp_path / "manifests"
    write_manifests(config, folder)
    resources = kustomize(folder / "overlays" / "cpu")
    for resource in resources:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
    claims = {r["metadata"]["name"] for r in resources if r["kind"] == "PersistentVolumeClaim"}
    assert claims == {"skewless-models", "skewless-request-logs"}
    [container] = _one(resources, "Deployment")["spec"]["template"]["spec"]["containers"]
    # tensorflow_model_server refuses any logging_config; skewless serve takes the same flags.
    assert container["image"] == "registry.example.com/skewless:1.2.0"
    assert container["command"] == ["skewless", "serve"]
    assert "--host=0.0.0.0" in container["args"]
    serve.make_context("serve", list(container["args"]))  # every flag is one serve knows
    assert {"name": "request-logs", "mountPath": "/logs"} in container["volumeMounts"]
    [config_map] = [r for r in resources if r["kind"] == "ConfigMap"
                    and "models.config" in r["data"]]
    (tmp_path / "models.config").write_text(
        config_map["data"]["models.config"].replace("/models/taxi", str(tmp_path)))
    [served] = serve_config.load_model_config_file(str(tmp_path / "models.config"))
    assert served.logging == serve_config.LoggingSpec(
        "/logs/taxi/taxi", 0.25, served.logging.sampling_config)


@pytest.mark.e2e
def test_local_serving_files_with_request_logging_write_logs_when_served(tmp_path, tf_tmpdir):
    from skewless.pipeline.manifests import write_local_serving_files
    from skewless.serving.client import RestClient
    from skewless.serving.server import ModelServer, ServerOptions
    from tests.serving import example_models

    config = _variant(tmp_path, deployment={"request_logging": {"sampling_rate": 1.0}},
                      serving={"push_dir": str(tmp_path / "serving")})
    example_models.export_taxi_model(str(config.model_push_dir / "1"))
    files = write_local_serving_files(config)
    options = ServerOptions(
        models=serve_config.load_model_config_file(str(files["models.config"])),
        port=0, rest_api_port=0, file_system_poll_wait_seconds=0)
    with ModelServer(options) as server, RestClient(port=server.rest_port) as client:
        client.predict("taxi", example_models.taxi_rows(2))
    [log] = (tmp_path / "serving" / "request_logs" / "taxi").glob("taxi-*.tfrecord")
    assert log.stat().st_size > 0
