"""Edits a pipeline config YAML in place, keeping its comments, order and layout (ruamel.yaml).

The edited text is validated as a whole config before it replaces the file, through a temporary
file and a rename: a change that would make the config invalid leaves the file as it was.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from skewless.pipeline.config import ConfigError, parse_config
from skewless.pipeline.files import write_text_atomically
from skewless.pipeline.run_config import PipelineConfig


def _merge(node: CommentedMap, changes: Mapping[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, Mapping):
            child = node.get(key)
            if not isinstance(child, CommentedMap):
                child = CommentedMap()
                node[key] = child
            _merge(child, value)
        else:
            node[key] = value


def _block(lines: list[str], key: str, indent: int) -> tuple[int, int] | None:
    """The line range of ``key:`` at ``indent`` and its nested lines, or None."""
    head = " " * indent + f"{key}:"
    for start, line in enumerate(lines):
        if line.startswith(head):
            stop = start + 1
            while stop < len(lines):
                body = lines[stop].lstrip(" ")
                if body and len(lines[stop]) - len(body) <= indent:
                    break
                stop += 1
            while stop > start + 1 and not lines[stop - 1].strip():
                stop -= 1
            return start, stop
    return None


def _splice(old: list[str], new: list[str], changes: Mapping[str, Any],
            indent: int) -> list[str]:
    """``old`` with the changed keys' lines taken from ``new``; every other line kept as is."""
    result = list(old)
    for key, value in changes.items():
        n = _block(new, key, indent)
        o = _block(result, key, indent)
        if n is None:
            continue
        if o is None:  # a new key: appended at the end of its parent
            result += new[n[0]:n[1]]
            continue
        block_style = not result[o[0]].split("#", 1)[0].split(":", 1)[1].strip()
        if isinstance(value, Mapping) and block_style:
            replaced = [result[o[0]], *_splice(result[o[0] + 1:o[1]], new[n[0] + 1:n[1]], value,
                                               indent + 2)]
        else:
            replaced = new[n[0]:n[1]]
        result[o[0]:o[1]] = replaced
    return result


def updated_text(text: str, changes: Mapping[str, Any]) -> str:
    """The YAML text with nested ``changes`` merged in.

    Only the lines of the changed keys are rewritten (by ruamel.yaml, which keeps their
    comments); every other line stays byte for byte, wrapped flow lists included.
    """
    handler = YAML()  # round-trip
    handler.preserve_quotes = True
    handler.width = 100
    handler.indent(mapping=2, sequence=4, offset=2)
    handler.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    document = handler.load(text)
    _merge(document, changes)
    out = io.StringIO()
    handler.dump(document, out)
    old = text.splitlines()
    new = [line.rstrip() for line in out.getvalue().splitlines()]
    spliced = _splice(old, new, changes, 0)
    return "\n".join(spliced) + "\n"


def update_config(config_path: Path, changes: Mapping[str, Any]) -> PipelineConfig:
    """Merges ``changes`` (nested sections) into the config file and returns the new config.

    Raises:
        ConfigError: The file cannot be read, or the changed config is invalid (the file is
            then left unchanged); the message names the key.
    """
    try:
        text = config_path.read_text()
    except OSError as error:
        raise ConfigError(f"{config_path}: {error.strerror}") from None
    new_text = updated_text(text, changes)
    config = parse_config(yaml.safe_load(new_text), config_path)
    write_text_atomically(config_path, new_text)
    return config
