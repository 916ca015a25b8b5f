"""Loading the config: one YAML file into one validated `PipelineConfig`, with errors as one line
naming the file and the key, and the check of what the config points at (files, columns, label,
import paths) before any component runs."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import ValidationError

from skewless.components import data_formats
from skewless.pipeline.labels import LabelError, LabelProfile, profile_label
from skewless.pipeline.run_config import BUILT_IN_LIMITS, PipelineConfig
from skewless.transforms.features import import_callable


class ConfigError(ValueError):
    """A config file that cannot be used; the message is one line naming file and key."""


_PATH_KEYS = (
    ("pipeline", "output_dir"),
    ("data", "path"),
    ("schema", "curated"),
    ("serving", "push_dir"),
    ("monitoring", "prometheus_file"),
    ("metadata", "sqlite"),
)


def _describe(error: dict) -> str:
    key = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
    key = key.replace("schema_", "schema")
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key"
    if kind == "missing":
        return f"{key}: required key is missing"
    got = error.get("input")
    shown = f", got {got!r}" if not isinstance(got, dict | list) else ""
    msg = msg.removeprefix("Value error, ").removeprefix("Input should be ")
    msg = msg.replace("a valid tuple", "a list")  # YAML lists become tuples in the config
    subkey = re.match(r"^([a-z_][\w.]*): ", msg) if kind == "value_error" else None
    if subkey:  # a validator that names the key below the section it checks
        key = subkey.group(1) if "." in subkey.group(1) or not key else f"{key}.{subkey.group(1)}"
        msg = msg[subkey.end():]
    where = f"{key}: " if key else ""
    return f"{where}expected {msg}{shown}" if kind != "value_error" else f"{where}{msg}"


def parse_config(raw: object, source: Path) -> PipelineConfig:
    """Validates a parsed YAML document; relative paths resolve against the file's folder.

    Raises:
        ConfigError: one line naming the file, the key and what was expected.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level")
    try:
        return PipelineConfig.model_validate(
            {**_tuples(_resolve_paths(raw, source.parent)), "source": source}
        )
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc.errors()[0])}") from None


def _resolve_paths(raw: dict, base: Path) -> dict:
    """The document with relative path strings made absolute; anything else is left to check."""
    resolved = dict(raw)
    for section, key in _PATH_KEYS:
        part = raw.get(section)
        if isinstance(part, dict) and isinstance(part.get(key), str):
            path = Path(part[key])
            if not path.is_absolute():
                resolved[section] = {**resolved[section], key: str((base / path).resolve())}
    return resolved


def _tuples(value: object) -> object:
    """YAML lists as tuples, so that the immutable config can hold them."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value


def load_config(path: str | Path, check_data: bool = True) -> PipelineConfig:
    """Loads and validates a config file, and by default checks the files and columns it names.

    Returns:
        The config; with check_data, its label classes resolved from the data.

    Raises:
        ConfigError: the file is missing or unreadable, a key is unknown or of the wrong type, a
            referenced file is missing, a feature is absent from the data, the label does not fit
            its task, or an import path fails.
    """
    source = Path(path).resolve()
    if not source.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(source.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}: not valid YAML{where}") from None
    config = parse_config(raw, source)
    if check_data:
        config, _ = check_references(config)
    return config


def check_references(config: PipelineConfig) -> tuple[PipelineConfig, LabelProfile | None]:
    """Checks what the config points at, before any component runs.

    Returns:
        The config with the label's classes taken from the data (unless listed), and the label
        column's profile (None for a derived label).

    Raises:
        ConfigError: see `load_config`.
    """
    src = config.source
    if not config.data.path.exists():
        raise ConfigError(f"{src}: data.path: no such file or folder {config.data.path}")
    curated = config.schema_.curated
    if curated is not None and not curated.is_file():
        raise ConfigError(f"{src}: schema.curated: no such file {curated}")
    try:
        columns = data_formats.columns(config.data.path, config.data.format)
    except ValueError as exc:
        raise ConfigError(f"{src}: data.path: {exc}") from None
    if columns:
        missing = [c for c in config.required_columns if c not in columns]
        if missing:
            raise ConfigError(
                f"{src}: {_key_listing(config, missing[0])}: the data at {config.data.path} has "
                f"no column {', '.join(map(repr, missing))} (it has {len(columns)} columns)"
            )
    for key, path in (
        ("transform.preprocessing_fn", config.transform.preprocessing_fn),
        ("model.build_fn", config.model.build_fn),
    ):
        if path is not None:
            try:
                import_callable(path)
            except (ImportError, AttributeError, ValueError) as exc:
                raise ConfigError(f"{src}: {key}: {exc}") from None
    check_tuning(config)
    return check_label(config)


def check_tuning(config: PipelineConfig) -> None:
    """Checks that a build_fn declares every hyperparameter the search space names beyond the
    built-in model's.

    Raises:
        ConfigError: a name neither built in nor declared by the build_fn.
    """
    if config.tuning is None or config.model.build_fn is None:
        return
    declared = getattr(import_callable(config.model.build_fn), "search_space", None) or {}
    for name in config.tuning.search_space:
        if name not in BUILT_IN_LIMITS and name not in declared:
            raise ConfigError(
                f"{config.source}: tuning.search_space.{name}: not a hyperparameter of the "
                f"built-in model ({', '.join(BUILT_IN_LIMITS)}) nor declared in the "
                f"`search_space` attribute of {config.model.build_fn}")


def check_label(config: PipelineConfig) -> tuple[PipelineConfig, LabelProfile | None]:
    """Checks the label column against the task and resolves its classes from the data.

    Raises:
        ConfigError: the label does not fit its task, or the data cannot be read.
    """
    label = config.label
    if label.column is None:
        return config, None
    try:
        values = data_formats.column_values(config.data.path, config.data.format, label.column)
        profile = profile_label(label.column, values, label.task, label.positive, label.classes)
    except (LabelError, ValueError) as exc:
        key = "" if isinstance(exc, LabelError) else "data.path: "
        raise ConfigError(f"{config.source}: {key}{exc}") from None
    if label.task == "regression" or label.classes is not None:
        return config, profile
    resolved = label.model_copy(update={"classes": profile.classes})
    return config.model_copy(update={"label": resolved}), profile


def _key_listing(config: PipelineConfig, column: str) -> str:
    """The config key under which a column is named, for error messages."""
    f = config.features
    for key, names in (("numeric", f.numeric.names), ("categorical", f.categorical.names),
                       ("bucketized", f.bucketized.names)):
        if column in names:
            return f"features.{key}.names"
    if config.label.derived is not None:
        side = "numerator" if column == config.label.derived.numerator else "denominator"
        return f"label.derived.{side}"
    return "label.column"
