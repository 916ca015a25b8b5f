"""ServingModel's plain functions: which version, and the schema as SERVING data must meet it."""

from __future__ import annotations

import pytest
from tensorflow_metadata.proto.v0 import schema_pb2

from skewless.components.serving_model.executor import (
    ModelVersionError,
    resolve_version,
    serving_schema,
)
from skewless.transforms.features import FeaturePlan
from skewless.transforms.signatures import serving_environments


def test_resolve_version_newest_named_or_a_one_line_error(tmp_path):
    for name in ("1700000000", "1700000100", ".1700000200.incomplete"):
        (tmp_path / name).mkdir()
    assert resolve_version(str(tmp_path), None) == (1700000100, str(tmp_path / "1700000100"))
    assert resolve_version(str(tmp_path), 1700000000)[0] == 1700000000
    with pytest.raises(ModelVersionError, match=r"model version 5 does not exist in .* "
                                                r"\(pushed: 1700000000, 1700000100\)"):
        resolve_version(str(tmp_path), 5)
    with pytest.raises(ModelVersionError, match="no model version is pushed"):
        resolve_version(str(tmp_path / "nothing"), None)


def test_label_columns_need_not_be_present_in_serving():
    raw = schema_pb2.Schema()
    for name in ("fare", "tips", "company"):
        feature = raw.feature.add(name=name, type=schema_pb2.FLOAT)
        feature.presence.min_fraction = 1.0
    plan = FeaturePlan(label="big_tipper", numeric=("fare",), categorical=("company",),
                       label_numerator="tips", label_denominator="fare",
                       label_greater_than=0.2)
    exported = serving_environments(raw, plan)
    assert list(exported.default_environment) == ["TRAINING", "SERVING"]
    assert {f.name: list(f.not_in_environment) for f in exported.feature} == {
        "fare": [], "tips": ["SERVING"], "company": []}
    serving = serving_schema(exported)
    assert {f.name: f.HasField("presence") for f in serving.feature} == {
        "fare": True, "tips": False, "company": True}
    assert not serving.default_environment
