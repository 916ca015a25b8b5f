"""The `monitoring` config section: defaults keep existing configs working; bad values are one
line naming the key."""

from __future__ import annotations

import pytest
import yaml

from skewless.pipeline.config import ConfigError, load_config, parse_config
from tests.conftest import TAXI_CONFIG


def test_configs_without_a_monitoring_section_get_the_defaults():
    monitoring = load_config(TAXI_CONFIG, check_data=False).monitoring
    assert (monitoring.threshold, monitoring.window_seconds) == (0.25, 86400)
    assert monitoring.triggers == ("skew", "drift", "prediction_drift", "new_data")


def test_per_feature_thresholds_and_windows(tmp_path):
    raw = yaml.safe_load(TAXI_CONFIG.read_text())
    raw["monitoring"] = {"threshold": 0.1, "thresholds": {"company": 0.3}, "window": "90m"}
    monitoring = parse_config(raw, tmp_path / "taxi.yaml").monitoring
    assert (monitoring.threshold_of("company"), monitoring.threshold_of("fare")) == (0.3, 0.1)
    assert monitoring.window_seconds == 5400


@pytest.mark.parametrize("monitoring, message", [
    ({"schedule": "hourly"}, "monitoring.schedule: expected a cron schedule of five fields"),
    ({"window": "90"}, "monitoring.window: expected a duration such as 30m, 6h or 1d"),
    ({"thresholds": {"fare": 1.5}}, "monitoring.thresholds.fare: expected a distance above 0 and "
                                    "at most 1, got 1.5"),
    ({"thresholds": {"tips": 0.2}}, "monitoring.thresholds: not a feature: tips"),
    ({"triggers": ["skew", "moon"]}, "monitoring.triggers.1: expected 'skew', 'drift', "
                                     "'prediction_drift' or 'new_data'"),
])
def test_a_bad_monitoring_section_is_one_line(tmp_path, monitoring, message):
    raw = yaml.safe_load(TAXI_CONFIG.read_text())
    raw["monitoring"] = monitoring
    with pytest.raises(ConfigError) as error:
        parse_config(raw, tmp_path / "taxi.yaml")
    assert message in str(error.value)
