"""The garbage collector and loaded models: frozen after a load, thawed to free an unloaded one."""

from __future__ import annotations

import gc
import time
import weakref

import pytest

from skewless.serving import config as config_lib
from skewless.serving.manager import END, ModelManager
from tests.serving.conftest import install_version

pytestmark = pytest.mark.e2e


def test_loaded_versions_are_frozen_and_an_unloaded_one_is_freed(tmp_path, models):
    base = str(tmp_path / "taxi")
    install_version(models.taxi_v1, base, 1)
    gc.unfreeze()
    manager = ModelManager(config_lib.single_model_config("taxi", base), poll_seconds=0)
    manager.start()
    try:
        version_1 = manager.acquire("taxi")
        version_1.release()
        # Frozen objects are out of the collector's sight: a full pass no longer walks them.
        tracked = {id(o) for o in gc.get_objects()}
        assert gc.get_freeze_count() > 10_000
        assert id(version_1.signatures) not in tracked
        freed = weakref.ref(version_1)
        del version_1, tracked

        install_version(models.taxi_v2, base, 2)
        manager.poll_once()
        deadline = time.monotonic() + 30
        while manager.status("taxi", 1)[0].state != END and time.monotonic() < deadline:
            time.sleep(0.05)
        assert manager.status("taxi", 1)[0].state == END
        deadline = time.monotonic() + 10
        while freed() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert freed() is None, "the unloaded version is still in memory"
        version_2 = manager.acquire("taxi")
        version_2.release()
        assert version_2.version == 2
    finally:
        manager.stop()
