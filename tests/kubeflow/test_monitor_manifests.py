"""`skewless manifests`' monitoring CronJob: rendered by real kustomize, strictly valid, and
running `skewless monitor --retrain` with the config and the volumes it needs."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from skewless.pipeline.config import load_config, parse_config
from skewless.pipeline.manifests import write_manifests
from tests.conftest import TAXI_CONFIG
from tests.kubeflow.test_manifests import K8S_VERSION, kustomize


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("manifests")
    write_manifests(load_config(TAXI_CONFIG, check_data=False), folder)
    return kustomize(folder / "monitor")


def test_the_cronjob_validates_strictly_against_kubernetes_schemas(rendered):
    assert sorted(r["kind"] for r in rendered) == ["ConfigMap", "CronJob"]
    for resource in rendered:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def test_the_cronjob_runs_the_monitor_with_the_config_and_volumes(rendered):
    [config_map] = [r for r in rendered if r["kind"] == "ConfigMap"]
    [cronjob] = [r for r in rendered if r["kind"] == "CronJob"]
    assert cronjob["spec"]["schedule"] == "0 * * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "skewless-pipeline:0.1.0"
    assert container["command"] == ["skewless", "monitor", "--config", "/etc/skewless/taxi.yaml",
                                    "--logs", "/mnt/models/logs", "--retrain"]
    # The hashed ConfigMap name is the one mounted, and it holds the very config file.
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert yaml.safe_load(config_map["data"]["taxi.yaml"]) == yaml.safe_load(
        TAXI_CONFIG.read_text())
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/etc/skewless": "config", "/mnt/data": "skewless-data",
                      "/mnt/models": "skewless-models"}
    assert volumes["skewless-models"]["persistentVolumeClaim"]["claimName"] == "skewless-models"


def test_schedule_and_logs_folder_come_from_the_monitoring_section(tmp_path):
    raw = yaml.safe_load(TAXI_CONFIG.read_text())
    raw["monitoring"] = {"schedule": "*/15 * * * *", "cluster_logs_dir": "/mnt/models/logs/t"}
    source = tmp_path / "taxi.yaml"
    source.write_text(yaml.safe_dump(raw))
    write_manifests(parse_config(raw, source), tmp_path / "out")
    [cronjob] = [r for r in kustomize(tmp_path / "out" / "monitor") if r["kind"] == "CronJob"]
    assert cronjob["spec"]["schedule"] == "*/15 * * * *"
    command = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
        "command"]
    assert command[command.index("--logs") + 1] == "/mnt/models/logs/t"


def test_with_request_logging_the_cronjob_reads_the_logs_volume_the_server_writes(tmp_path):
    raw = yaml.safe_load(TAXI_CONFIG.read_text())
    raw.setdefault("deployment", {})["request_logging"] = {
        "sampling_rate": 0.5, "claim_name": "taxi-request-logs", "mount_path": "/logs"}
    source = tmp_path / "taxi.yaml"
    source.write_text(yaml.safe_dump(raw))
    write_manifests(parse_config(raw, source), tmp_path / "out")
    [cronjob] = [r for r in kustomize(tmp_path / "out" / "monitor") if r["kind"] == "CronJob"]
    kubernetes_validate.validate(cronjob, K8S_VERSION, strict=True)
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"][container["command"].index("--logs") + 1] == "/logs/taxi"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/logs"] == "taxi-request-logs"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["taxi-request-logs"]["persistentVolumeClaim"]["claimName"] == \
        "taxi-request-logs"
    # The serving Deployment writes there: its logging_config prefix is inside that folder.
    models_config = (tmp_path / "out" / "base" / "models.config").read_text()
    assert 'filename_prefix: "/logs/taxi/taxi"' in models_config
