"""Shared fixtures: small samples of the bundled data and configs pointing at them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

# Before TensorFlow is imported anywhere in the test session.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
TAXI_CSV = REPO / "data" / "taxi" / "data.csv"
TAXI_CONFIG = REPO / "configs" / "taxi.yaml"
IRIS_CONFIG = REPO / "configs" / "iris.yaml"
DIABETES_CONFIG = REPO / "configs" / "diabetes.yaml"


def write_sample(path: Path, rows: int, source: Path = TAXI_CSV) -> Path:
    """The header and the first `rows` data rows of a CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with source.open() as f, path.open("w") as out:
        for i, line in enumerate(f):
            if i > rows:
                break
            out.write(line)
    return path


def sample_config_dict(workdir: Path, data_path: Path, **sections) -> dict:
    """configs/taxi.yaml pointed at `data_path`, with outputs under `workdir` and few steps.

    Keyword arguments replace or update whole sections, e.g. `model={"train_steps": 50}`.
    """
    raw = yaml.safe_load(TAXI_CONFIG.read_text())
    raw["pipeline"]["output_dir"] = str(workdir / "out")
    raw["data"]["path"] = str(data_path)
    raw["serving"]["push_dir"] = str(workdir / "serving")
    raw["metadata"]["sqlite"] = str(workdir / "out" / "metadata.sqlite")
    raw["model"].update(train_steps=200, eval_steps=20)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key].update(value)
        else:
            raw[key] = value
    return raw


def write_config(path: Path, raw: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def sample_csv(tmp_path_factory) -> Path:
    """2,000 rows of the bundled taxi data."""
    return write_sample(tmp_path_factory.mktemp("sample") / "data.csv", 2000)


@pytest.fixture()
def tf_tmpdir(tmp_path, monkeypatch) -> Path:
    """TFX leaves mkdtemp folders behind: keep them in the test's own folder."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def pushed_taxi(tmp_path_factory):
    """One trained and pushed taxi model (1,000 rows, 100 steps), shared by the tests that score
    with a pushed model: (config, version)."""
    from skewless.pipeline.config import load_config
    from skewless.pipeline.runner import run_pipeline

    workdir = tmp_path_factory.mktemp("pushed-taxi")
    data = write_sample(workdir / "data" / "data.csv", 1000)
    raw = sample_config_dict(workdir, data, model={"train_steps": 100, "eval_steps": 10},
                             evaluation={"thresholds": [{"metric": "AUC", "lower_bound": 0.0}]})
    config = load_config(write_config(workdir / "taxi.yaml", raw))
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(workdir / "tmp")
    (workdir / "tmp").mkdir()
    try:
        run_pipeline(config, lambda event: None)
    finally:
        os.environ.pop("TMPDIR") if saved is None else os.environ.update(TMPDIR=saved)
    [version] = [int(p.name) for p in config.model_push_dir.iterdir() if p.name.isdigit()]
    return config, version
