"""Running the CLI as a user does, in a subprocess, and reading what it printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

STEP = re.compile(r"^\[\s*\d+/\d+\] (\S+)\s+(executed|cached|resolved|failed)\b", re.M)


def skewless(*args: str, tmpdir: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    tmpdir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "skewless", *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )


def states(stdout: str) -> dict[str, str]:
    """{node id: executed|cached|resolved|failed} from `skewless run` progress lines."""
    return dict(STEP.findall(stdout))


def versions(model_dir: Path) -> list[str]:
    """Everything in a model base path, hidden folders included (they must not be left)."""
    return sorted(p.name for p in model_dir.iterdir()) if model_dir.exists() else []


def write_avro(table: pa.Table, path: Path) -> None:
    """The same rows as Avro records, every field nullable, as a warehouse export writes them."""
    import fastavro

    def avro_type(arrow_type: pa.DataType) -> str | list[str]:
        if pa.types.is_null(arrow_type):  # no value in any row: no type, as in the CSV
            return "null"
        if pa.types.is_integer(arrow_type):
            return ["null", "long"]
        return ["null", "double" if pa.types.is_floating(arrow_type) else "string"]

    schema = {"type": "record", "name": "taxi_trip", "fields": [
        {"name": field.name, "type": avro_type(field.type)} for field in table.schema]}
    with path.open("wb") as out:
        fastavro.writer(out, fastavro.parse_schema(schema), table.to_pylist())


REPORT_LINE = re.compile(r"^\s*report: (\S+\.html)$", re.M)
INLINE_PNG = re.compile(r'<img alt="(\w+)" src="data:image/png;base64,')
# Anything a browser would fetch: scripts, styles, images or frames from elsewhere.
FETCHED = re.compile(r"<script|<link|<iframe|\bsrc=\"(?!data:)|url\(|@import", re.I)


def report_of(stdout: str) -> Path:
    """The report path `skewless run` printed."""
    match = REPORT_LINE.search(stdout)
    assert match, f"no report line in:\n{stdout}"
    return Path(match[1])


def assert_offline_report(path: Path, figures: tuple[str, ...], texts: tuple[str, ...]) -> str:
    """A self-contained page: the named figures as inline PNGs, the texts, nothing fetched."""
    page = path.read_text()
    assert FETCHED.search(page) is None, FETCHED.search(page)[0]
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    assert "Not drawn" not in page, page[page.index("Not drawn") - 200:][:600]
    assert sorted(INLINE_PNG.findall(page)) == sorted(figures)
    for text in texts:
        assert text in page, text
    return page
