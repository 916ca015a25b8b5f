"""The model manager's routing while versions and labels change."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from skewless.serving.config import ModelConfig, VersionPolicy
from skewless.serving.errors import ServingError
from skewless.serving.manager import ModelManager
from tests.serving.conftest import install_version

pytestmark = pytest.mark.e2e


def labelled(base: str, versions: tuple[int, ...], stable: int) -> tuple[ModelConfig, ...]:
    return (ModelConfig("taxi", base, VersionPolicy("specific", versions=versions),
                        MappingProxyType({"stable": stable})),)


def test_a_label_never_points_at_an_unloaded_version_while_a_reload_drops_it(tmp_path, models):
    """A rollback moves `stable` back to v2 and drops v1 in one reload: every routing table the
    reload publishes sends `stable` to a loaded version."""
    base = str(tmp_path / "taxi")
    install_version(models.taxi_v1, base, 1)
    install_version(models.taxi_v2, base, 2)
    probing, seen = [False], []

    def probe(_configs) -> None:  # runs on every published routing change
        if probing[0]:
            try:
                model = manager.acquire("taxi", label="stable")
            except ServingError as error:
                seen.append(error.message)
            else:
                seen.append(model.version)
                model.release()

    manager = ModelManager(labelled(base, (1, 2), stable=1), poll_seconds=0, on_change=probe)
    manager.start()
    try:
        probing[0] = True
        manager.reload_config(labelled(base, (2,), stable=2))
        assert seen and set(seen) <= {1, 2}, seen
        assert seen[-1] == 2
        assert manager.available_versions("taxi") == [2]
    finally:
        manager.stop()


def test_a_reload_that_would_leave_a_label_on_a_dropped_version_is_refused(tmp_path, models):
    """stable stays on v1 while the policy drops v1, or stable moves to v2 while a new label
    names a version that fails to load: refused, and stable's version keeps serving."""
    base = str(tmp_path / "taxi")
    install_version(models.taxi_v1, base, 1)
    install_version(models.taxi_v2, base, 2)
    (tmp_path / "taxi" / "3").mkdir()  # a version that cannot load
    manager = ModelManager(labelled(base, (1, 2), stable=1), poll_seconds=0)
    manager.start()
    try:
        with pytest.raises(ServingError) as dropped:
            manager.reload_config(labelled(base, (2, 3), stable=1))
        assert dropped.value.message == (
            "Request to assign label to version 1 of model taxi, which is not currently "
            "available for inference.")
        canary = (ModelConfig("taxi", base, VersionPolicy("specific", versions=(2, 3)),
                              MappingProxyType({"stable": 2, "canary": 3})),)
        with pytest.raises(ServingError):
            manager.reload_config(canary)
        for _ in range(2):
            model = manager.acquire("taxi", label="stable")
            assert model.version == 1
            model.release()
    finally:
        manager.stop()
