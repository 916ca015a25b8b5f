"""`skewless monitor` before anything can be compared: one line, exit status 2."""

from __future__ import annotations

from click.testing import CliRunner

from skewless.cli import main
from tests.conftest import sample_config_dict, write_config


def _monitor(*args: str):
    return CliRunner().invoke(main, ["monitor", *args])


def test_no_run_yet_says_what_to_do_first(tmp_path):
    config = write_config(tmp_path / "taxi.yaml", sample_config_dict(tmp_path, tmp_path / "d.csv"))
    (tmp_path / "logs").mkdir()
    result = _monitor("--config", str(config), "--logs", str(tmp_path / "logs"))
    assert result.exit_code == 2
    assert result.output == (f"Error: no MLMD store at {tmp_path / 'out' / 'metadata.sqlite'}: "
                             "run `skewless run --config ...` first\n")


def test_a_bad_window_or_config_is_one_line(tmp_path):
    config = write_config(tmp_path / "taxi.yaml", sample_config_dict(tmp_path, tmp_path / "d.csv"))
    result = _monitor("--config", str(config), "--logs", str(tmp_path), "--window", "90")
    assert result.exit_code == 2
    assert "Invalid value for --window: expected a duration such as 30m, 6h or 1d, got '90'" in \
        result.output
    broken = write_config(tmp_path / "broken.yaml", sample_config_dict(
        tmp_path, tmp_path / "d.csv", monitoring={"window": "soon"}))
    result = _monitor("--config", str(broken), "--logs", str(tmp_path))
    assert result.exit_code == 2
    assert result.output == (f"Error: {broken}: monitoring.window: expected a duration such as "
                             "30m, 6h or 1d, got 'soon'\n")
