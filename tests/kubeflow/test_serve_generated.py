"""The generated serving files drive `skewless serve` on a model the real pipeline pushed."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import REPO

COMMITTED = REPO / "kubeflow" / "serving"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@pytest.mark.e2e
def test_skewless_serve_runs_on_the_generated_files(pushed_taxi, tmp_path):
    """On the suite's shared pushed model, whose config is named as the bundled one, so that the
    generated files' headers match the committed ones."""
    from skewless.pipeline.manifests import write_local_serving_files
    from skewless.serving.client import RestClient

    pushed, _ = pushed_taxi

    files = write_local_serving_files(pushed)
    assert {p.parent for p in files.values()} == {pushed.serving.push_dir}
    # The files Kubernetes mounts and the local ones are the same, but for the base path.
    assert files["batching_parameters.txt"].read_text() == (
        COMMITTED / "overlays" / "cpu" / "batching_parameters.txt").read_text()
    assert files["monitoring.config"].read_text() == (
        COMMITTED / "base" / "monitoring.config").read_text()
    assert files["models.config"].read_text() == (
        COMMITTED / "base" / "models.config").read_text().replace(
        '"/models/taxi"', f'"{pushed.model_push_dir}"')

    grpc_port, rest_port = _free_port(), _free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "skewless", "serve", "--host=127.0.0.1",
         f"--port={grpc_port}", f"--rest_api_port={rest_port}",
         f"--model_config_file={files['models.config']}",
         f"--batching_parameters_file={files['batching_parameters.txt']}",
         f"--monitoring_config_file={files['monitoring.config']}"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        status_url = f"http://127.0.0.1:{rest_port}/v1/models/taxi"  # the readiness probe's
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(status_url, timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server never became ready"
                time.sleep(0.5)
        features = pushed.features.raw_names
        with pushed.data.path.open() as f:
            rows = [{k: _value(r[k]) for k in features} for r in csv.DictReader(f)
                    if all(r[k] != "" for k in features)][:8]
        with RestClient("127.0.0.1", rest_port, timeout=30) as client:
            outputs = client.predict("taxi", rows)
        [probabilities] = [v for k, v in outputs.items() if "prob" in k]
        assert probabilities.shape[0] == len(rows) == 8
        assert ((probabilities >= 0) & (probabilities <= 1)).all()
        metrics_url = f"http://127.0.0.1:{rest_port}{pushed.deployment.prometheus_path}"
        with urllib.request.urlopen(metrics_url, timeout=5) as response:
            assert response.status == 200  # monitoring.config enabled Prometheus there
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
