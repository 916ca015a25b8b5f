"""The cluster part of the config: where the compiled pipeline runs (`kubeflow`) and how
TensorFlow Serving is deployed (`deployment`)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from skewless.pipeline.sections import (
    AbsolutePath,
    ImageName,
    K8sName,
    Quantity,
    Section,
    Version,
    text_matching,
)

MetricName = text_matching(
    r"[A-Za-z_][A-Za-z0-9_.:-]*",
    "a metric name such as tensorflow_serving_requests_per_second (letters, digits, '_', '.', "
    "':' and '-')",
)


def _cluster_location(value: str) -> str:
    """A location a pod can reach: an absolute path or a URI such as gs://bucket/dir."""
    if not (value.startswith("/") or re.match(r"^[a-z][a-z0-9+.-]*://.+", value)):
        raise ValueError(f"expected an absolute cluster path or a URI like gs://bucket/dir, "
                         f"got {value!r}")
    return value.rstrip("/") or "/"


class Volume(Section):
    claim_name: K8sName
    mount_path: AbsolutePath


class KubeflowSection(Section):
    """Where and how the compiled pipeline runs on Kubeflow Pipelines (cluster locations)."""

    image: ImageName = "skewless-pipeline:0.1.0"
    pipeline_root: str = "minio://mlpipeline/v2/artifacts"
    data_root: str = "/mnt/data/taxi"
    push_dir: str = "/mnt/models"
    volumes: tuple[Volume, ...] = ()
    # in_memory: multi_processing was seen to drop rows silently (RowCountCheck would fail the run).
    beam_args: tuple[str, ...] = ("--direct_running_mode=in_memory",)

    @model_validator(mode="after")
    def _reachable(self) -> KubeflowSection:
        for key in ("pipeline_root", "data_root", "push_dir"):
            try:
                _cluster_location(getattr(self, key))
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
        if not self.push_dir.startswith("/"):
            raise ValueError("push_dir: the Pusher renames folders atomically, so it needs a "
                             f"mounted filesystem path such as /mnt/models, got {self.push_dir!r}")
        mounts = [v.mount_path.rstrip("/") for v in self.volumes]
        for key in ("data_root", "push_dir"):
            path = getattr(self, key)
            if path.startswith("/") and mounts and not any(
                path == m or path.startswith(m + "/") for m in mounts
            ):
                raise ValueError(f"{key}: {path} is under no volumes mount_path "
                                 f"({', '.join(mounts)})")
        bad = [a for a in self.beam_args if not a.startswith("--")]
        if bad:
            raise ValueError(f"beam_args: expected --flag=value items, got {bad[0]!r}")
        return self


class BatchingSection(Section):
    """TF Serving BatchingParameters (see its batching guide)."""

    num_batch_threads: int = Field(gt=0)
    max_batch_size: int = Field(gt=0)
    batch_timeout_micros: int = Field(ge=0)
    max_enqueued_batches: int = Field(gt=0)
    allowed_batch_sizes: tuple[int, ...] = ()

    @model_validator(mode="after")
    def _sizes(self) -> BatchingSection:
        sizes = self.allowed_batch_sizes
        if sizes and (any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)) or sizes[0] < 1
                      or sizes[-1] != self.max_batch_size):
            raise ValueError("allowed_batch_sizes: expected increasing sizes ending at "
                             f"max_batch_size ({self.max_batch_size})")
        return self


class Amounts(Section):
    cpu: Quantity
    memory: Quantity


def _cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


class ServingProfile(Section):
    """One overlay of the serving Deployment: batching, resources and GPUs per replica."""

    batching: BatchingSection
    requests: Amounts
    limits: Amounts
    gpus: int = Field(default=0, ge=0)


class Replicas(Section):
    """The HorizontalPodAutoscaler: replica bounds and the targets it scales at.

    `skewless loadtest --write-config` sets these from a measured capacity: a CPU target the
    server can reach, or a requests-per-second target on a metric that the Prometheus adapter
    serves as a custom pods metric (`requests_metric`).
    """

    min: int = Field(default=1, ge=1)
    max: int = Field(default=4, ge=1)
    target_cpu_utilization: int | None = Field(default=70, gt=0, le=100)
    target_requests_per_second: float | None = Field(default=None, gt=0)
    requests_metric: MetricName = "tensorflow_serving_requests_per_second"

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        if self.max < self.min:
            raise ValueError(f"max: {self.max} is below min ({self.min})")
        if self.target_cpu_utilization is None and self.target_requests_per_second is None:
            raise ValueError("give target_cpu_utilization or target_requests_per_second: the "
                             "autoscaler needs a target")
        return self


class ModelVolume(Section):
    claim_name: K8sName = "skewless-models"
    mount_path: AbsolutePath = "/models"
    size: Quantity = "10Gi"
    storage_class: str | None = None


class RequestLogging(Section):
    """Request logs of the model server (TF Serving's `logging_config`) on a volume of their own.

    The released `tensorflow_model_server` has no log collector, so with request logging on the
    Deployment runs `skewless serve` (the pipeline image) with the same flags and ports.
    """

    sampling_rate: float = Field(default=0.1, ge=0, le=1)
    claim_name: K8sName = "skewless-request-logs"
    mount_path: AbsolutePath = "/logs"
    size: Quantity = "10Gi"
    storage_class: str | None = None


class DeploymentSection(Section):
    """TensorFlow Serving on Kubernetes, and the serving files `skewless serve` reads too."""

    tf_serving_version: Version = "2.16.1"
    version_policy: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = Field(default=1, gt=0)  # with latest
    versions: tuple[int, ...] = ()  # with specific
    version_labels: dict[str, int] = {}
    file_system_poll_wait_seconds: int = Field(default=30, gt=0)
    model_config_poll_wait_seconds: int = Field(default=60, gt=0)
    prometheus_path: AbsolutePath = "/monitoring/prometheus/metrics"
    replicas: Replicas = Replicas()
    model_volume: ModelVolume = ModelVolume()
    request_logging: RequestLogging | None = None  # off unless given
    gpu: ServingProfile = ServingProfile(
        batching=BatchingSection(num_batch_threads=4, max_batch_size=512,
                                 batch_timeout_micros=2000, max_enqueued_batches=4),
        requests=Amounts(cpu="4", memory="8Gi"),
        limits=Amounts(cpu="4", memory="8Gi"),
        gpus=1,
    )
    cpu: ServingProfile = ServingProfile(
        batching=BatchingSection(num_batch_threads=2, max_batch_size=128,
                                 batch_timeout_micros=1000, max_enqueued_batches=2),
        requests=Amounts(cpu="2", memory="2Gi"),
        limits=Amounts(cpu="2", memory="4Gi"),
    )

    @model_validator(mode="after")
    def _policy(self) -> DeploymentSection:
        if (self.version_policy == "specific") != bool(self.versions):
            raise ValueError("versions: give versions exactly when version_policy is specific")
        if self.cpu.gpus:
            raise ValueError("deployment.cpu.gpus: the cpu overlay requests no GPUs")
        if not self.gpu.gpus:
            raise ValueError("deployment.gpu.gpus: the gpu overlay needs at least 1 GPU")
        for name in ("gpu", "cpu"):
            profile = getattr(self, name)
            threads = profile.batching.num_batch_threads
            if threads > max(1, _cores(profile.limits.cpu)):
                raise ValueError(f"deployment.{name}.batching.num_batch_threads: {threads} "
                                 f"threads exceed the CPU limit of {profile.limits.cpu} cores")
        for label, version in self.version_labels.items():
            if not re.fullmatch(r"[A-Za-z0-9_-]+", label) or version < 0:
                raise ValueError(f"version_labels: invalid label {label!r}: {version!r}")
        return self
