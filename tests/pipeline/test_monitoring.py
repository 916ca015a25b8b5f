"""The monitor's plain functions: windows, Arrow batches, the SERVING schema and comparators."""

from __future__ import annotations

import pyarrow as pa
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2

from skewless.pipeline.config import load_config
from skewless.pipeline.monitoring import (
    SERVING,
    Comparison,
    record_batch,
    schema_anomalies,
    serving_schema,
    windows_of,
)
from skewless.pipeline.request_logs import LoggedRequest
from tests.conftest import TAXI_CONFIG


def _request(timestamp: int) -> LoggedRequest:
    return LoggedRequest(timestamp, "taxi", 1, [{"fare": 1.0}], None)


def test_the_last_window_ends_at_the_newest_request_and_the_one_before_precedes_it():
    windows = windows_of([_request(t) for t in (100, 7000, 10_000)], 3600)
    assert windows.current == (10_001 - 3600, 10_001)
    assert windows.previous == (10_001 - 7200, 10_001 - 3600)


def test_rows_become_list_columns_typed_by_value_and_schema():
    schema = schema_pb2.Schema()
    schema.feature.add(name="fare", type=schema_pb2.FLOAT)
    batch = record_batch([{"fare": 7, "company": "Flash", "hour": 3}, {"hour": 4}],
                         ("fare", "company", "hour"), schema)
    assert batch.schema.field("fare").type == pa.list_(pa.float32())  # an int for a FLOAT
    assert batch.schema.field("company").type == pa.list_(pa.binary())
    assert batch.schema.field("hour").type == pa.list_(pa.int64())
    assert batch.column(1).to_pylist() == [[b"Flash"], None]  # missing stays missing


def test_the_serving_environment_holds_the_features_only_with_their_comparators():
    config = load_config(TAXI_CONFIG, check_data=False)
    schema = schema_pb2.Schema()
    for name, kind in (("fare", schema_pb2.FLOAT), ("payment_type", schema_pb2.BYTES),
                       ("trip_start_hour", schema_pb2.INT), ("tips", schema_pb2.FLOAT)):
        schema.feature.add(name=name, type=kind)
    checked = {f.name: f for f in serving_schema(config, schema).feature}
    assert list(checked["tips"].not_in_environment) == [SERVING]  # the label's column
    assert checked["payment_type"].skew_comparator.infinity_norm.threshold == 0.25
    assert checked["payment_type"].drift_comparator.infinity_norm.threshold == 0.25
    assert checked["fare"].skew_comparator.jensen_shannon_divergence.threshold == 0.25
    # An integer categorical feature has histograms, not value counts, in its statistics.
    assert checked["trip_start_hour"].skew_comparator.HasField("jensen_shannon_divergence")
    assert not schema.feature[0].HasField("skew_comparator")  # the served schema is untouched


def test_a_distance_fails_only_above_its_threshold():
    assert Comparison("skew", "fare", "Jensen-Shannon", 0.3, 0.25).status == "FAIL"
    assert Comparison("skew", "fare", "Jensen-Shannon", 0.25, 0.25).status == "ok"
    assert Comparison("drift", "fare", "Jensen-Shannon", None, 0.25).status == "n/a"


def test_skew_and_drift_reasons_are_comparisons_not_schema_anomalies():
    anomalies = anomalies_pb2.Anomalies()
    info = anomalies.anomaly_info["payment_type"]
    info.reason.add(type=anomalies_pb2.AnomalyInfo.ENUM_TYPE_UNEXPECTED_STRING_VALUES,
                    description="Examples contain values missing from the schema: x (~5%).")
    info.reason.add(type=anomalies_pb2.AnomalyInfo.COMPARATOR_L_INFTY_HIGH, description="high")
    [anomaly] = schema_anomalies(anomalies)
    assert (anomaly.feature, anomaly.kind) == ("payment_type",
                                               "ENUM_TYPE_UNEXPECTED_STRING_VALUES")
