"""kubeflow/Dockerfile: the pipeline image installs exactly what `make install` installs."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import REPO

DOCKERFILE = (REPO / "kubeflow" / "Dockerfile").read_text()
MAKEFILE = (REPO / "Makefile").read_text()
SCRIPT = REPO / "scripts" / "install.sh"


def test_image_is_python_311_on_debian_12_without_dev_extras_or_tests():
    assert re.findall(r"(?m)^FROM (\S+)", DOCKERFILE) == ["python:3.11-slim-bookworm"]
    assert sys.version_info[:2] == (3, 11)  # the Python the constraints were resolved on
    copied = re.findall(r"(?m)^COPY (.+) \S+$", DOCKERFILE)
    assert not any("tests" in c for c in copied)
    [run] = re.findall(r"(?m)^RUN (.*)$", DOCKERFILE)
    assert run.startswith("sh scripts/install.sh python . ")  # `.`, not `.[dev]`


def test_dockerfile_and_makefile_install_through_the_same_script():
    assert re.search(r"(?m)^\tsh scripts/install\.sh \$\(BIN\)/python -e \"\.\[dev\]\"$",
                     MAKEFILE)
    assert re.search(r"(?m)^RUN sh scripts/install\.sh python \. ", DOCKERFILE)
    # Neither installs any other way.
    assert "pip install" not in MAKEFILE and "pip install" not in DOCKERFILE
    script = SCRIPT.read_text()
    assert "-c constraints.txt" in script and "--ignore-requires-python" in script


def test_image_copies_every_package_folder_and_the_script():
    setup = (REPO / "setup.py").read_text()
    folders = set(re.findall(r'FOLDERS = \(([^)]*)\)', setup)[0].replace('"', "").split(", "))
    copied = set(re.findall(r"(?m)^COPY (\w+)/ ", DOCKERFILE))
    assert folders <= copied, f"package folders missing from the image: {folders - copied}"
    ignore = (REPO / "kubeflow" / "Dockerfile.dockerignore").read_text()
    assert all(f"!{folder}/" in ignore for folder in folders)
    assert "!scripts/install.sh" in ignore and "COPY scripts/install.sh scripts/" in DOCKERFILE


def test_install_script_resolves_the_image_install_here(tmp_path):
    """The image's exact install step, as a pip dry run against this venv (no network needed:
    every pin is installed), resolves to this project and nothing missing."""
    env = {**os.environ, "PIP_DRY_RUN": "1", "PIP_NO_INDEX": "1",
           "PIP_NO_BUILD_ISOLATION": "0", "TMPDIR": str(tmp_path)}
    done = subprocess.run(["sh", str(SCRIPT), sys.executable, "--report", str(tmp_path / "r"),
                           "."], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    report = json.loads((tmp_path / "r").read_text())
    names = {item["metadata"]["name"] for item in report["install"]}
    assert names == {"skewless"}
