"""Quiet by default: the known noise is dropped, real warnings and logs still show."""

from __future__ import annotations

import logging
import warnings

import pytest

from skewless.pipeline import quiet


@pytest.fixture()
def restored():
    """silence() and verbose() change process-wide state: put it back after the test."""
    filters = warnings.filters[:]
    names = (*quiet.NOISY_LOGGERS, *quiet.QUIET_LOG_LINES)
    loggers = {name: logging.getLogger(name) for name in names}
    saved = {name: (log.level, log.filters[:]) for name, log in loggers.items()}
    warnings.resetwarnings()  # not pytest's filters (they ignore every FutureWarning)
    warnings.simplefilter("always")
    yield
    warnings.filters[:] = filters
    for name, (level, kept) in saved.items():
        loggers[name].setLevel(level)
        loggers[name].filters[:] = kept


def _warn_from(module: str, category: type[Warning]) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn_explicit("a message", category, "file.py", 1, module=module)
    return caught


def test_silence_drops_known_noise_and_keeps_real_warnings_and_logs(restored, caplog):
    quiet.silence()
    assert _warn_from("google.api_core._python_version_support", FutureWarning) == []
    assert len(_warn_from("my_notebook_code", FutureWarning)) == 1
    assert len(_warn_from("google.api_core", UserWarning)) == 1

    caplog.set_level(logging.NOTSET)
    logging.getLogger("absl").setLevel(logging.WARNING)  # caplog lowers levels; silence's again
    logging.getLogger("absl").warning("Examples artifact does not have payload_format custom "
                                      "property. Falling back to FORMAT_TF_EXAMPLE")
    logging.getLogger("absl").info("Running driver for Trainer")
    logging.getLogger("absl").warning("the data has 3 anomalies")
    assert [r.getMessage() for r in caplog.records] == ["the data has 3 anomalies"]


def test_verbose_turns_the_logs_back_on(restored, caplog):
    quiet.silence()
    quiet.verbose()
    caplog.set_level(logging.NOTSET)
    logging.getLogger("absl").setLevel(logging.INFO)
    logging.getLogger("absl").info("Running driver for Trainer")
    logging.getLogger("absl").warning("Examples artifact does not have payload_format")
    assert len(caplog.records) == 2
    assert len(_warn_from("google.api_core", FutureWarning)) == 1
