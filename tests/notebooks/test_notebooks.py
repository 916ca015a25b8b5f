"""The notebooks, executed top to bottom on a real Jupyter kernel of this virtual environment."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml
from nbclient import NotebookClient

from tests.conftest import IRIS_CONFIG, REPO, sample_config_dict, write_config, write_sample
from tests.pipeline.helpers import assert_offline_report, report_of, skewless

# The story fixture executes four notebooks and a `skewless run`: more than the suite's
# per-test 900 s when the machine is shared.
pytestmark = pytest.mark.timeout(2400)

NOTEBOOKS = REPO / "notebooks"
WALKTHROUGH = NOTEBOOKS / "walkthrough.ipynb"
METADATA = NOTEBOOKS / "metadata.ipynb"
# Printed by an extra cell appended to the executed copy only.
PREFIX_MARK = "kernel sys.prefix="
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
# The cells that draw a figure, and what a reader may see in red: nothing but these lines.
FIGURE_CELLS = ("statistics_figure(", "training_figure(", "evaluation_figure(", "slices_figure(")
STDERR_ALLOWED = (
    "Matplotlib is building the font cache",  # once per machine
)
LINEAGE_TYPES = ("Examples", "ExampleStatistics", "Schema", "TransformGraph", "Model",
                 "ModelBlessing", "ModelEvaluation", "PushedModel")


def _code(notebook) -> list[str]:
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def _texts(cell) -> str:
    """Everything a reader sees of a cell's outputs, as text."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type == "error":
            parts.append("\n".join(output.traceback))
        else:
            data = output.get("data", {})
            parts += [str(data.get(kind, "")) for kind in ("text/plain", "text/html")]
    return "\n".join(parts)


def _cell_running(notebook, fragment: str):
    [cell] = [c for c in notebook.cells if c.cell_type == "code" and fragment in c.source]
    return cell


def execute(path: Path, config: Path, tmp: Path) -> nbformat.NotebookNode:
    """Runs a notebook with the kernel named python3, the small config and a private TMPDIR."""
    notebook = nbformat.read(path, as_version=4)
    probe = f"import sys; print('{PREFIX_MARK}' + sys.prefix)"
    notebook.cells.append(nbformat.v4.new_code_cell(probe))
    # What a user's kernel gets: the notebook helpers quiet the stack themselves.
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_USE_LEGACY_KERAS", "PYTHONWARNINGS")}
    env.update(SKEWLESS_CONFIG=str(config), TMPDIR=str(tmp))
    client = NotebookClient(notebook, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute(env=env)  # raises CellExecutionError on the first failing cell
    return notebook


def execute_in_background(path: Path, config: Path, tmp: Path, out: Path) -> subprocess.Popen:
    """`execute` in another process (its kernel uses the second core); the notebook goes to out."""
    code = ("import sys; from pathlib import Path; import nbformat; "
            "from tests.notebooks.test_notebooks import execute; "
            "nbformat.write(execute(*map(Path, sys.argv[1:4])), sys.argv[4])")
    return subprocess.Popen([sys.executable, "-c", code, str(path), str(config), str(tmp),
                             str(out)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def small_config(tmp_path_factory) -> Path:
    """A config on 1,500 rows of the bundled data, 50 training steps, outputs in a tmp folder."""
    work = tmp_path_factory.mktemp("notebooks")
    data = write_sample(work / "data.csv", 1500)
    # Model quality is not under test here: a low floor keeps the push (and the served model).
    raw = sample_config_dict(work, data, model={"train_steps": 50, "eval_steps": 10},
                             evaluation={"thresholds": [{"metric": "AUC", "lower_bound": 0.5}]})
    return write_config(work / "config.yaml", raw)


@pytest.fixture(scope="module")
def iris_config(tmp_path_factory) -> Path:
    """configs/iris.yaml (multiclass) with outputs in a tmp folder and few steps."""
    work = tmp_path_factory.mktemp("notebooks-iris")
    raw = yaml.safe_load(IRIS_CONFIG.read_text())
    raw["pipeline"]["output_dir"] = str(work / "out")
    raw["data"]["path"] = str(IRIS_CONFIG.parent / raw["data"]["path"])
    raw["serving"]["push_dir"] = str(work / "serving")
    raw["metadata"]["sqlite"] = str(work / "out" / "metadata.sqlite")
    raw["model"].update(train_steps=60, eval_steps=5)
    raw["evaluation"]["thresholds"] = [{"metric": "SparseCategoricalAccuracy",
                                        "lower_bound": 0.0}]
    return write_config(work / "iris.yaml", raw)


@pytest.fixture(scope="module")
def kernel_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kernel-tmp")


@dataclasses.dataclass(frozen=True)
class Story:
    """A user's session on one store: both notebooks, `skewless run`, both notebooks again."""

    walkthrough: nbformat.NotebookNode
    metadata: nbformat.NotebookNode
    run: subprocess.CompletedProcess
    walkthrough_again: nbformat.NotebookNode
    metadata_again: nbformat.NotebookNode


@pytest.fixture(scope="module")
def iris_walkthrough_process(iris_config, kernel_tmp) -> subprocess.Popen:
    """The multiclass walkthrough, started before the taxi story and run beside it."""
    process = execute_in_background(WALKTHROUGH, iris_config, kernel_tmp,
                                    iris_config.parent / "walkthrough.ipynb")
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def iris_walkthrough(iris_walkthrough_process, iris_config) -> nbformat.NotebookNode:
    _, stderr = iris_walkthrough_process.communicate(timeout=1200)
    assert iris_walkthrough_process.returncode == 0, stderr[-5000:]
    return nbformat.read(iris_config.parent / "walkthrough.ipynb", as_version=4)


@pytest.fixture(scope="module")
def story(small_config, kernel_tmp, iris_walkthrough_process) -> Story:
    walkthrough = execute(WALKTHROUGH, small_config, kernel_tmp)
    metadata = execute(METADATA, small_config, kernel_tmp)
    run = skewless("run", "--config", str(small_config), tmpdir=kernel_tmp)
    assert run.returncode == 0, run.stderr[-3000:] + run.stdout[-3000:]
    return Story(walkthrough, metadata, run, execute(WALKTHROUGH, small_config, kernel_tmp),
                 execute(METADATA, small_config, kernel_tmp))


@pytest.fixture(scope="module")
def walkthrough(story) -> nbformat.NotebookNode:
    return story.walkthrough


@pytest.mark.parametrize("path", [WALKTHROUGH, METADATA], ids=lambda p: p.stem)
def test_committed_notebooks_have_no_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.mark.parametrize("path", [WALKTHROUGH, METADATA], ids=lambda p: p.stem)
def test_notebooks_only_import_and_show(path):
    """No function or class is defined in a notebook: the pipeline's code lives in the library."""
    for source in _code(nbformat.read(path, as_version=4)):
        for node in ast.walk(ast.parse(source)):
            assert not isinstance(node, DEFINITIONS), source


def test_walkthrough_builds_the_components_with_create_pipeline():
    sources = "\n".join(_code(nbformat.read(WALKTHROUGH, as_version=4)))
    assert "build.create_pipeline(config)" in sources
    assert "InteractiveContext" not in sources.replace("interactive_context", "")
    assert "Trainer(" not in sources and "Transform(" not in sources


def _pictures(cell) -> list[str]:
    return [o.data["image/png"] for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]


def _stderr(notebook) -> list[str]:
    """Every line a reader sees in red: stderr streams and errors."""
    lines = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream" and output.name == "stderr":
                lines += output.text.splitlines()
            elif output.output_type == "error":
                lines += output.traceback
    return [line for line in lines if line.strip()]


def assert_quiet(notebook) -> None:
    noise = [line for line in _stderr(notebook)
             if not any(allowed in line for allowed in STDERR_ALLOWED)]
    assert not noise, "stderr beyond the allowlist:\n" + "\n".join(noise[:20])


def assert_figures(notebook) -> None:
    for fragment in FIGURE_CELLS:
        pictures = _pictures(_cell_running(notebook, fragment))
        assert len(pictures) == 1, f"{fragment}: {len(pictures)} pictures"
        assert len(pictures[0]) > 5000  # a drawn PNG (base64), not an empty frame


def served(notebook, api: str) -> tuple[str, np.ndarray]:
    """The output name and values the serving cells printed for REST or gRPC."""
    fragment = "rest.predict(" if api == "REST" else "grpc_client.predict("
    text = _texts(_cell_running(notebook, fragment))
    match = re.search(rf"^{api} (\w+): (\[.*\])$", text, re.MULTILINE)
    assert match, text
    return match[1], np.array(json.loads(match[2]))


@pytest.mark.e2e
def test_walkthrough_runs_on_the_venv_kernel_and_serves_predictions(walkthrough):
    last = _texts(walkthrough.cells[-1])
    assert f"{PREFIX_MARK}{sys.prefix}" in last, last

    pushed = _texts(_cell_running(walkthrough, "context.run(step[build.PUSHER])"))
    assert re.search(r"pushed version \d+", pushed), pushed

    key, rest = served(walkthrough, "REST")
    assert key == "probabilities"  # the binary task's prediction_key
    assert rest.shape == (3,) and ((0.0 <= rest) & (rest <= 1.0)).all()
    assert served(walkthrough, "gRPC")[1] == pytest.approx(rest, abs=1e-6)
    assert "classes" in _texts(_cell_running(walkthrough, "rest.predict("))

    raw_http = _texts(_cell_running(walkthrough, "urllib.request.urlopen"))
    assert "curl -X POST" in raw_http
    answer = re.search(r"^200 (\{.*\})$", raw_http, re.MULTILINE)
    assert answer and '"predictions"' in answer[1], raw_http
    assert "server stopped" in _texts(_cell_running(walkthrough, "server.stop()"))

    shown = _texts(_cell_running(walkthrough, "raw_and_transformed("))
    assert "trip_miles_xf" in shown and "raw" in shown and "transformed" in shown
    assert "val_loss" in _texts(_cell_running(walkthrough, "training_history("))
    slices = _texts(_cell_running(walkthrough, "metrics_by_slice("))
    assert "Overall" in slices and "payment_type=" in slices and "auc" in slices


@pytest.mark.e2e
def test_statistics_table_tells_empty_from_missing(walkthrough):
    table = _texts(_cell_running(walkthrough, "statistics_table("))
    assert "empty" in table and "missing" in table
    # The taxi sample's empty company cells: present-but-empty, not counted as values.
    row = re.search(r"^company\s+STRING\s+(\d+)\s+(\d+)\s+(\d+)", table, re.MULTILINE)
    assert row, table
    with_value, empty, missing = map(int, row.groups())
    assert empty > 0 and missing == 0 and with_value > 0


@pytest.mark.e2e
def test_notebooks_run_again_on_the_same_store_after_skewless_run(story):
    for notebook in (story.walkthrough, story.walkthrough_again):
        assert_figures(notebook)
        assert_quiet(notebook)
    for notebook in (story.metadata, story.metadata_again):
        assert_quiet(notebook)
    again = _texts(_cell_running(story.walkthrough_again, "context.run(step[build.PUSHER])"))
    assert re.search(r"pushed version \d+|not pushed", again), again
    runs = _texts(_cell_running(story.metadata_again, "registry.runs()"))
    assert "skewless run" in runs and "interactive" in runs
    # The second execution shows what happened since the first.
    assert "skewless run" not in _texts(_cell_running(story.metadata, "registry.runs()"))


@pytest.mark.e2e
def test_skewless_run_between_the_notebooks_leaves_an_offline_report(story):
    assert_offline_report(report_of(story.run.stdout),
                          ("statistics", "training", "evaluation", "slices"),
                          ("AUC", "PASS", "Blessed"))


@pytest.mark.e2e
def test_walkthrough_on_a_multiclass_config(iris_walkthrough):
    notebook = iris_walkthrough
    assert_figures(notebook)
    assert_quiet(notebook)
    key, rest = served(notebook, "REST")
    assert key == "scores" and rest.shape == (3, 3)
    np.testing.assert_allclose(rest.sum(axis=1), 1.0, atol=1e-5)
    assert served(notebook, "gRPC")[1] == pytest.approx(rest, abs=1e-6)
    assert "multiclass task" in _texts(notebook.cells[1])
    slices = _texts(_cell_running(notebook, "metrics_by_slice("))
    assert "sparse_categorical_accuracy" in slices


@pytest.mark.e2e
def test_metadata_notebook_shows_the_registry_and_lineage(story):
    pushed = _texts(_cell_running(story.walkthrough, "context.run(step[build.PUSHER])"))
    version = re.search(r"pushed version (\d+)", pushed)[1]

    notebook = story.metadata
    assert f"{PREFIX_MARK}{sys.prefix}" in _texts(notebook.cells[-1])
    assert "interactive" in _texts(_cell_running(notebook, "registry.runs()"))
    assert version in _texts(_cell_running(notebook, "registry.pushed_models()"))

    table = _texts(_cell_running(notebook, "lineage.table()"))
    for type_name in LINEAGE_TYPES:
        assert re.search(rf"\b{type_name}\b", table), f"{type_name} missing from\n{table}"
    assert f"version {version}" in table
    picture = _cell_running(notebook, "lineage  # the picture")
    svg = [o.data["image/svg+xml"] for o in picture.outputs if "image/svg+xml" in o.get("data", {})]
    assert svg and "TransformGraph" in svg[0] and "Trainer" in svg[0]
