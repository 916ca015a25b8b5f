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


def updated_text(text: str, changes: Mapping[str, Any]) -> str:
    """The YAML text with nested ``changes`` merged in; comments and layout kept."""
    handler = YAML()  # round-trip
    handler.preserve_quotes = True
    handler.width = 100
    document = handler.load(text)
    _merge(document, changes)
    out = io.StringIO()
    handler.dump(document, out)
    return out.getvalue()


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
