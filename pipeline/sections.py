"""The base of every config section: unknown keys and wrong types are errors, values are frozen."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# Paths arrive from YAML as strings; everything else is checked strictly (no "12" for 12).
LaxPath = Annotated[Path, Field(strict=False)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def text_matching(regex: str, meaning: str) -> type[str]:
    """A string type whose error says in words what is allowed (`meaning`), not the regex."""
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"expected {meaning}, got {value!r}")
        return value

    return Annotated[str, AfterValidator(check)]


PIPELINE_NAME = r"[a-z0-9][a-z0-9-]{0,127}"
PipelineName = text_matching(
    PIPELINE_NAME,
    "lowercase letters, digits and hyphens, starting with a letter or digit, at most 128 "
    "characters (it is also the Kubeflow pipeline name, which allows no more)",
)
ModelName = text_matching(
    r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    "letters, digits, '_', '.' and '-', starting with a letter or digit (it is a folder name "
    "and part of TF Serving's URLs)",
)
K8sName = text_matching(
    r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?",
    "a Kubernetes name: lowercase letters, digits and '-', starting and ending with a letter or "
    "digit, at most 63 characters",
)
AbsolutePath = text_matching(r"/.*", "an absolute path starting with '/'")
Quantity = text_matching(
    r"[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?",
    "a Kubernetes quantity such as 500m, 2, 512Mi or 8Gi",
)
ImageName = text_matching(
    r"[a-z0-9][^\s:@]*(:[\w.-]+)?",
    "an image reference such as registry.example.com/team/image:tag (lowercase, no spaces)",
)
Version = text_matching(r"\d+\.\d+\.\d+", "a version such as 2.16.1")
