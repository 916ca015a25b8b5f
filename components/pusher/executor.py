"""Pushes a blessed model as `<base>/<integer version>/`, never leaving a half-written version.

TF Serving polls the model base path and loads any all-digit folder it finds, so a version must
appear complete at once: the model is copied into a hidden sibling folder, then renamed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from absl import logging
from tfx import types
from tfx.components.pusher import executor as tfx_pusher
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, path_utils, proto_utils


def existing_versions(base: str | os.PathLike) -> list[int]:
    """The integer versions under a model base path (any filesystem TFX reads), oldest first, as
    TF Serving sees them."""
    base = os.fspath(base)
    if not fileio.isdir(base):
        return []
    names = (name.rstrip("/") for name in fileio.listdir(base))
    return sorted(
        int(name) for name in names if name.isdigit() and fileio.isdir(os.path.join(base, name))
    )


def next_version(base: Path, now: float | None = None) -> int:
    """Unix seconds, but always above every version already there."""
    latest = max(existing_versions(base), default=0)
    return max(int(time.time() if now is None else now), latest + 1)


FINGERPRINT = "fingerprint.pb"


def already_pushed(model_dir: Path, base: Path) -> Path | None:
    """The version folder that already holds this very SavedModel (same fingerprint), if any."""
    fingerprint = model_dir / FINGERPRINT
    if not fingerprint.is_file():
        return None
    candidate = fingerprint.read_bytes()
    for version in reversed(existing_versions(base)):
        existing = base / str(version) / FINGERPRINT
        if existing.is_file() and existing.read_bytes() == candidate:
            return base / str(version)
    return None


def push_atomically(model_dir: Path, base: Path, now: float | None = None) -> Path:
    """Copies a SavedModel to `<base>/<version>/` via a hidden folder and a rename.

    A model that is already there (a rerun of a cached Trainer) is not pushed again.

    Returns:
        The version folder.
    """
    pushed = already_pushed(model_dir, base)
    if pushed is not None:
        logging.info("This model is already version %s; not pushed again.", pushed.name)
        return pushed
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".push-", dir=base))
    try:
        shutil.copytree(model_dir, staging, dirs_exist_ok=True)
        while True:
            target = base / str(next_version(base, now))
            try:
                os.rename(staging, target)  # atomic on one filesystem; fails if target exists
                return target
            except OSError:
                if not target.exists():
                    raise
                now = None  # another pusher took that version: take the next one
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def infra_validated_model(input_dict: dict[str, list[types.Artifact]]) -> str | None:
    """The InfraValidator's copy of the model (with its warm-up requests), if it made one."""
    blessings = input_dict.get(standard_component_specs.INFRA_BLESSING_KEY)
    if not blessings:
        return None
    blessing = artifact_utils.get_single_instance(blessings)
    if not blessing.get_int_custom_property(tfx_pusher._INFRA_BLESSING_MODEL_FLAG_KEY):
        return None
    return path_utils.stamped_model_path(blessing.uri)


class Executor(tfx_pusher.Executor):
    """TFX's Pusher with an atomic, monotonic filesystem push, that requires an infra blessing
    and pushes the infra-validated copy of the model, warm-up requests included."""

    def CheckBlessing(self, input_dict: dict[str, list[types.Artifact]]) -> bool:
        if not input_dict.get(standard_component_specs.INFRA_BLESSING_KEY):
            logging.info("No infra blessing: the model was not validated on a server.")
            return False
        return super().CheckBlessing(input_dict)

    def GetModelPath(self, input_dict: dict[str, list[types.Artifact]]) -> str:
        return infra_validated_model(input_dict) or super().GetModelPath(input_dict)

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY]
        )
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            logging.info("Model not blessed: nothing pushed.")
            return
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination
        )
        base = Path(destination.filesystem.base_directory)
        version_dir = push_atomically(Path(self.GetModelPath(input_dict)), base)
        io_utils.copy_dir(str(version_dir), model_push.uri)
        self._MarkPushed(
            model_push, pushed_destination=str(version_dir), pushed_version=version_dir.name
        )
        logging.info("Model pushed to %s", version_dir)
