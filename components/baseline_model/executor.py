"""Finds the model currently pushed for this model name and hands it on as a Model artifact.

The baseline is what TF Serving serves: the newest integer version under the push directory. It is
found on the filesystem, the same way on this machine and in any Kubeflow task that mounts the
models volume, so no orchestrator-side resolver (which open-source KFP cannot run) is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils, path_utils

from skewless.components.pusher.executor import FINGERPRINT, existing_versions

MODEL_KEY = "model"
BASELINE_KEY = "baseline_model"
PUSH_DIR_KEY = "model_push_dir"
# Custom properties of the baseline Model artifact (and, copied, of the evaluation).
FOUND = "baseline_found"
PATH = "baseline_path"
VERSION = "baseline_version"


def current_version(base: Path) -> Path | None:
    """The version folder TF Serving serves under `base` (the newest), or None."""
    versions = existing_versions(base)
    return base / str(versions[-1]) if versions else None


def is_same_model(candidate: Path, pushed: Path) -> bool:
    """Whether two SavedModels are the same model (same fingerprint)."""
    a, b = candidate / FINGERPRINT, pushed / FINGERPRINT
    return a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()


def find_baseline(candidate: Path, base: Path) -> Path | None:
    """The pushed model to compare `candidate` with: the current version, unless it is the
    candidate itself (a rerun of an unchanged Trainer), which is never compared with itself."""
    pushed = current_version(base)
    if pushed is None or is_same_model(candidate, pushed):
        return None
    return pushed


class Executor(base_executor.BaseExecutor):
    """Copies the current pushed version into the output Model, or marks that there is none."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        candidate = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        baseline = artifact_utils.get_single_instance(output_dict[BASELINE_KEY])
        base = Path(exec_properties[PUSH_DIR_KEY])
        pushed = find_baseline(Path(path_utils.serving_model_path(candidate.uri)), base)
        if pushed is None:
            logging.info("No baseline: nothing else pushed under %s.", base)
            baseline.set_int_custom_property(FOUND, 0)
            return
        # A copy, not a reference: the artifact stays valid after TF Serving's folder is pruned.
        io_utils.copy_dir(str(pushed), path_utils.serving_model_dir(baseline.uri))
        baseline.set_int_custom_property(FOUND, 1)
        baseline.set_string_custom_property(PATH, str(pushed))
        baseline.set_string_custom_property(VERSION, pushed.name)
        logging.info("Baseline: version %s at %s.", pushed.name, pushed)


def has_baseline(artifact: types.Artifact) -> bool:
    """Whether a BaselineModel output holds a model (the first run's holds none)."""
    # Through Kubeflow, the property arrives as a JSON number; get_int_custom_property reads both.
    return artifact.get_int_custom_property(FOUND) == 1
