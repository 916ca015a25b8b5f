"""BaselineModel: the model TF Serving serves now, found on the push directory."""

from __future__ import annotations

from pathlib import Path

from tfx.types import standard_artifacts

from skewless.components.baseline_model.executor import (
    Executor,
    current_version,
    find_baseline,
    has_baseline,
)


def _model(root: Path, fingerprint: bytes) -> Path:
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(b"graph " + fingerprint)
    (root / "fingerprint.pb").write_bytes(fingerprint)
    return root


def _artifact(uri: Path) -> standard_artifacts.Model:
    artifact = standard_artifacts.Model()
    artifact.uri = str(uri)
    return artifact


def test_the_newest_integer_version_is_the_baseline(tmp_path):
    base = tmp_path / "models" / "taxi"
    _model(base / "1700000000", b"old")
    _model(base / "1800000000", b"served")
    (base / ".push-abc").mkdir()  # a push in progress is no version
    assert current_version(base) == base / "1800000000"
    candidate = _model(tmp_path / "candidate", b"new")
    assert find_baseline(candidate, base) == base / "1800000000"


def test_no_pushed_model_and_the_same_model_give_no_baseline(tmp_path):
    candidate = _model(tmp_path / "candidate", b"same")
    assert find_baseline(candidate, tmp_path / "nothing-here") is None
    base = tmp_path / "taxi"
    _model(base / "1700000000", b"same")
    assert find_baseline(candidate, base) is None


def test_executor_copies_the_served_model_and_records_where_it_was(tmp_path):
    base = tmp_path / "models" / "taxi"
    _model(base / "1800000000", b"served")
    candidate = _artifact(tmp_path / "trainer")
    _model(tmp_path / "trainer" / "Format-Serving", b"new")
    baseline = _artifact(tmp_path / "baseline")
    Executor().Do({"model": [candidate]}, {"baseline_model": [baseline]},
                  {"model_push_dir": str(base)})
    copied = tmp_path / "baseline" / "Format-Serving" / "saved_model.pb"
    assert copied.read_bytes() == b"graph served"
    assert has_baseline(baseline)
    assert baseline.get_string_custom_property("baseline_path") == str(base / "1800000000")
    assert baseline.get_string_custom_property("baseline_version") == "1800000000"


def test_executor_on_a_first_run_outputs_no_model(tmp_path):
    candidate = _artifact(tmp_path / "trainer")
    _model(tmp_path / "trainer" / "Format-Serving", b"new")
    baseline = _artifact(tmp_path / "baseline")
    Executor().Do({"model": [candidate]}, {"baseline_model": [baseline]},
                  {"model_push_dir": str(tmp_path / "models" / "taxi")})
    assert not has_baseline(baseline)
    assert not (tmp_path / "baseline").exists()
