"""The monitoring CronJob that `skewless manifests` writes beside the serving deployment.

`kubeflow/serving/monitor/` is a kustomization of its own: a CronJob that runs
`skewless monitor --retrain` in the pipeline image on `monitoring.schedule`, with the pipeline
config from a ConfigMap and the `kubeflow.volumes` (data, models, request logs) mounted. The
config it runs with must name paths inside the pod (the volumes' mount paths).
"""

from __future__ import annotations

import posixpath

import yaml

from skewless.pipeline.manifests import _yaml, app_name
from skewless.pipeline.run_config import PipelineConfig

MONITOR_FOLDER = "monitor"
CONFIG_MOUNT = "/etc/skewless"


def monitor_name(config: PipelineConfig) -> str:
    return app_name(config).removesuffix("-serving") + "-monitor"


def _config_file(config: PipelineConfig) -> str:
    return config.source.name if config.source is not None else "pipeline.yaml"


def logs_dir(config: PipelineConfig) -> str:
    """Where the monitor reads the request logs in its pod: the folder the serving Deployment
    writes them to when `deployment.request_logging` is on (its volume is mounted at the same
    path), else `monitoring.cluster_logs_dir`."""
    logging = config.deployment.request_logging
    if logging is None:
        return config.monitoring.cluster_logs_dir
    return posixpath.join(logging.mount_path, config.serving.model_name)


def cronjob(config: PipelineConfig) -> dict:
    """The CronJob: one monitor run at a time, a failed run (a threshold crossed) not retried."""
    name = monitor_name(config)
    claims = {v.claim_name: v.mount_path for v in config.kubeflow.volumes}
    logging = config.deployment.request_logging
    if logging is not None:
        claims.setdefault(logging.claim_name, logging.mount_path)
    volumes = [{"name": claim, "persistentVolumeClaim": {"claimName": claim}} for claim in claims]
    mounts = [{"name": claim, "mountPath": path} for claim, path in claims.items()]
    container = {
        "name": "monitor",
        "image": config.kubeflow.image,
        "command": ["skewless", "monitor", "--config", f"{CONFIG_MOUNT}/{_config_file(config)}",
                    "--logs", logs_dir(config), "--retrain"],
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
                         *mounts],
    }
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "monitor"}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "schedule": config.monitoring.schedule,
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {"spec": {"backoffLimit": 0, "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {"name": f"{name}-config"}},
                                *volumes],
                },
            }}},
        },
    }


def monitor_files(config: PipelineConfig) -> dict[str, str]:
    """The files of `monitor/`, by path relative to the manifests folder."""
    config_file = _config_file(config)
    files = {
        f"{MONITOR_FOLDER}/kustomization.yaml": _yaml(config, {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": ["cronjob.yaml"],
            "configMapGenerator": [{"name": f"{monitor_name(config)}-config",
                                    "files": [config_file]}],
        }),
        f"{MONITOR_FOLDER}/cronjob.yaml": _yaml(config, cronjob(config)),
    }
    # kustomize reads a ConfigMap's files only below its own folder: a copy of the config file
    # (or, for a config that has none, the config as loaded).
    files[f"{MONITOR_FOLDER}/{config_file}"] = (
        config.source.read_text() if config.source is not None and config.source.is_file()
        else yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False))
    return files
