"""Fixtures of the serving tests: small SavedModels built once, servers on free local ports."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import pytest  # noqa: E402

CLIENT_TIMEOUT = 20.0


@pytest.fixture(scope="session", autouse=True)
def _tf_tmpdir(tmp_path_factory) -> Iterator[None]:
    """Keeps TensorFlow's temporary files inside pytest's tmp dir."""
    tmp = str(tmp_path_factory.mktemp("tfTMP"))
    old_env, old_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tmp
    tempfile.tempdir = tmp
    yield
    tempfile.tempdir = old_tempdir
    if old_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old_env


@dataclass(frozen=True)
class Models:
    """Exported fixture models: ready-made version folders to copy into base paths."""

    taxi_v1: str  # bias 0, with a warm-up file
    taxi_v2: str  # bias 1
    taxi_v3: str  # bias -1
    classifier: str


@pytest.fixture(scope="session")
def models(tmp_path_factory, _tf_tmpdir) -> Models:
    """Builds the fixture SavedModels once per session (a few seconds)."""
    from tests.serving import example_models

    root = tmp_path_factory.mktemp("exported")
    return Models(
        taxi_v1=example_models.export_taxi_model(str(root / "taxi_v1"), bias=0.0, warmup_rows=2),
        taxi_v2=example_models.export_taxi_model(str(root / "taxi_v2"), bias=1.0),
        taxi_v3=example_models.export_taxi_model(str(root / "taxi_v3"), bias=-1.0),
        classifier=example_models.export_classifier_model(str(root / "classifier")),
    )


def install_version(source: str, base_path: str, version: int) -> str:
    """Copies a version folder into a base path atomically (copy aside, then rename)."""
    os.makedirs(base_path, exist_ok=True)
    staging = os.path.join(base_path, f".staging-{version}")
    shutil.copytree(source, staging)
    target = os.path.join(base_path, str(version))
    os.rename(staging, target)
    return target


@pytest.fixture(scope="session")
def contract_root(tmp_path_factory, models: Models) -> str:
    """Base paths of the contract server: taxi (v1), multi (v1, v2 with labels), classifier."""
    root = tmp_path_factory.mktemp("contract")
    install_version(models.taxi_v1, str(root / "taxi"), 1)
    install_version(models.taxi_v1, str(root / "multi"), 1)
    install_version(models.taxi_v2, str(root / "multi"), 2)
    install_version(models.classifier, str(root / "classifier"), 1)
    (root / "models.config").write_text(
        f"""
model_config_list {{
  config {{ name: "taxi" base_path: "{root / 'taxi'}" model_platform: "tensorflow" }}
  config {{
    name: "multi" base_path: "{root / 'multi'}"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{ name: "classifier" base_path: "{root / 'classifier'}" }}
}}
"""
    )
    (root / "monitoring.config").write_text(
        'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n'
    )
    (root / "batching.config").write_text(
        "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\n"
        "max_enqueued_batches { value: 1000 }\nnum_batch_threads { value: 2 }\n"
    )
    return str(root)


MAX_BODY_BYTES = 256 * 1024


@pytest.fixture(scope="session")
def contract_server(contract_root: str):
    """The server the contract tests talk to (REST + gRPC, batching, monitoring)."""
    from skewless.serving import config as config_lib
    from skewless.serving.server import ModelServer, ServerOptions

    options = ServerOptions(
        models=config_lib.load_model_config_file(os.path.join(contract_root, "models.config")),
        port=0,
        rest_api_port=0,
        file_system_poll_wait_seconds=0,
        batching=config_lib.load_batching_parameters_file(
            os.path.join(contract_root, "batching.config")
        ),
        monitoring=config_lib.load_monitoring_config_file(
            os.path.join(contract_root, "monitoring.config")
        ),
        rest_api_max_body_bytes=MAX_BODY_BYTES,
        grpc_max_message_bytes=MAX_BODY_BYTES,
    )
    server = ModelServer(options).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def taxi_server(tmp_path_factory, models: Models):
    """A server of the taxi model with batching and the default size limits (64 MB REST
    bodies, 256 MB gRPC messages), for the tests that try to break it."""
    from skewless.serving import config as config_lib
    from skewless.serving.server import ModelServer, ServerOptions

    base = str(tmp_path_factory.mktemp("taxi_server") / "taxi")
    install_version(models.taxi_v1, base, 1)
    options = ServerOptions(
        models=config_lib.single_model_config("taxi", base),
        port=0, rest_api_port=0, file_system_poll_wait_seconds=0,
        batching=config_lib.BatchingConfig(max_batch_size=16, batch_timeout_micros=1000),
    )
    with ModelServer(options) as running:
        yield running


@pytest.fixture()
def rest(contract_server):
    """A REST client of the contract server."""
    from skewless.serving.client import RestClient

    with RestClient(port=contract_server.rest_port, timeout=CLIENT_TIMEOUT, retries=0) as client:
        yield client


@pytest.fixture()
def grpc_client(contract_server):
    """A gRPC client of the contract server."""
    from skewless.serving.client import GrpcClient

    with GrpcClient(port=contract_server.grpc_port, timeout=CLIENT_TIMEOUT, retries=0) as client:
        yield client


def predict_request(name: str = "taxi", rows=None, **spec):
    """A PredictRequest of taxi feature rows; ``spec`` sets ModelSpec fields."""
    from tensorflow_serving.apis import predict_pb2

    from skewless.serving import tensors
    from tests.serving import example_models

    rows = rows if rows is not None else example_models.taxi_rows(3, seed=1)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    for feature, values in example_models.taxi_columns(rows).items():
        request.inputs[feature].CopyFrom(tensors.to_tensor_proto(values))
    return request
