"""The folders are the architecture: dependencies point one way (STYLE.md).

import-linter's graph builder cannot follow setup.py's package_dir mapping, so the contracts are
checked here from the source: every `import skewless...` of every module, read with `ast`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

# folder -> skewless packages it must not import
FORBIDDEN = {
    "transforms": ("skewless.pipeline", "skewless.components", "skewless.serving", "skewless.cli"),
    # The InfraValidator serves the candidate on skewless's own server (serving/).
    "components": ("skewless.pipeline", "skewless.cli"),
    "serving": ("skewless.pipeline", "skewless.components", "skewless.cli"),
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_dependencies_point_one_way(folder):
    offenders = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for module in imported_modules(path):
            if module.startswith(FORBIDDEN[folder]):
                offenders.append(f"{path.relative_to(REPO)} imports {module}")
    assert not offenders, "\n".join(offenders)


def test_the_checker_sees_a_forbidden_import(tmp_path):
    sample = tmp_path / "bad.py"
    sample.write_text("from skewless.pipeline.config import load_config\nimport os\n")
    assert imported_modules(sample) == {"skewless.pipeline.config", "os"}


def test_no_module_file_paths_anywhere():
    """User code is referenced as installed Python, never as a module_file path string."""
    offenders = [
        str(path.relative_to(REPO))
        for folder in ("pipeline", "components", "transforms", "serving", "kubeflow", "skewless")
        for path in (REPO / folder).rglob("*.py")
        if "module_file=" in path.read_text()
    ]
    assert not offenders


def test_rest_and_grpc_front_ends_are_siblings():
    """Neither front end imports the other: both build on the service and serving/responses.py."""
    serving = REPO / "serving"
    assert "skewless.serving.grpc_server" not in imported_modules(serving / "rest_server.py")
    assert "skewless.serving.rest_server" not in imported_modules(serving / "grpc_server.py")
    rest_imports = imported_modules(serving / "rest_server.py")
    assert not any("grpc_server" in name for name in rest_imports)
    source = (serving / "rest_server.py").read_text()
    assert "grpc_server" not in source


def test_fixture_models_live_under_tests():
    assert not (REPO / "serving" / "example_models.py").exists()
    assert (REPO / "tests" / "serving" / "example_models.py").exists()
