"""The feature plan: what transforms/ needs to know of the config, as a plain JSON-able value.

It travels to the Transform and Trainer executors as TFX `custom_config`, so the same plan drives
the training graph and the serving signatures wherever they run (locally or in a Kubeflow pod).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

from skewless.transforms.task import BinaryTask, Task, task_from_dict

PLAN_KEY = "skewless_feature_plan"
TRANSFORMED_SUFFIX = "_xf"
# The transformed label's weight: 0.0 for rows whose label is missing (not trained on, not
# evaluated), 1.0 otherwise. TFMA reads it as the example weight.
WEIGHT_KEY = "__weight__"


def import_callable(path: str) -> Callable:
    """The callable an import path such as `package.module.function` names.

    Raises:
        ValueError: the path is malformed, or names nothing callable.
        ImportError: the module does not import.
    """
    module_name, _, attr = path.rpartition(".")
    if not module_name or not all(part.isidentifier() for part in path.split(".")):
        raise ValueError(f"expected an import path like 'package.module.function', got {path!r}")
    value = getattr(importlib.import_module(module_name), attr, None)
    if not callable(value):
        raise ValueError(f"{path!r} names nothing callable in {module_name}")
    return value


def transformed_name(name: str) -> str:
    return name + TRANSFORMED_SUFFIX


def cross_name(features: tuple[str, ...]) -> str:
    return "_x_".join(features)


@dataclasses.dataclass(frozen=True)
class FeaturePlan:
    """Feature treatments, the label and its task, and model hyperparameters."""

    label: str
    task: Task = BinaryTask()
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    bucketized: tuple[str, ...] = ()
    crosses: tuple[tuple[tuple[str, ...], int], ...] = ()
    top_k: int = 1000
    oov_buckets: int = 10
    buckets: int = 10
    label_column: str | None = None
    label_numerator: str | None = None
    label_denominator: str | None = None
    label_greater_than: float | None = None
    hidden_units: tuple[int, ...] = (64, 32)
    embedding_dim: int = 8
    learning_rate: float = 0.001
    batch_size: int = 128
    seed: int = 42
    build_fn: str | None = None  # import path of a user's model builder

    @property
    def raw_features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical + self.bucketized

    @property
    def label_sources(self) -> tuple[str, ...]:
        if self.label_column is not None:
            return (self.label_column,)
        return (self.label_numerator, self.label_denominator)

    def to_custom_config(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {PLAN_KEY: {**fields, "task": self.task.to_dict()}}

    @classmethod
    def from_custom_config(cls, custom_config: dict[str, Any] | None) -> FeaturePlan:
        """Rebuilds the plan that `to_custom_config` stored (JSON turns tuples into lists).

        Raises:
            ValueError: the custom_config carries no feature plan.
        """
        if not custom_config or PLAN_KEY not in custom_config:
            raise ValueError(f"custom_config has no {PLAN_KEY!r}; build it with FeaturePlan")
        raw = dict(custom_config[PLAN_KEY])
        for key in ("numeric", "categorical", "bucketized", "hidden_units"):
            raw[key] = tuple(raw[key])
        raw["crosses"] = tuple((tuple(names), int(n)) for names, n in raw["crosses"])
        raw["task"] = task_from_dict(raw["task"])
        return cls(**raw)
