"""`skewless report` before any run: one line naming what is missing, no file written."""

from __future__ import annotations

from click.testing import CliRunner

from skewless.cli import main
from tests.conftest import TAXI_CSV, sample_config_dict, write_config


def test_report_without_a_store_is_a_one_line_error(tmp_path):
    config = write_config(tmp_path / "taxi.yaml", sample_config_dict(tmp_path, TAXI_CSV))
    result = CliRunner().invoke(main, ["report", "--config", str(config)])
    assert result.exit_code == 1
    store = tmp_path / "out" / "metadata.sqlite"
    assert result.output == (f"Error: no MLMD store at {store}: "
                             "run `skewless run --config ...` first\n")
    assert not (tmp_path / "out").exists()
