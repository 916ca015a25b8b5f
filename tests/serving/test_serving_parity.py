"""Parity: REST, gRPC and the in-process ``serving_default`` signature agree within 1e-6."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from tests.serving import example_models

pytestmark = pytest.mark.e2e


def test_200_rows_agree_over_rest_grpc_and_in_process(contract_server, contract_root, rest,
                                                      grpc_client):
    rows = example_models.taxi_rows(200, seed=7)
    loaded = tf.saved_model.load(os.path.join(contract_root, "taxi", "1"))
    columns = example_models.taxi_columns(rows)
    in_process = {
        name: tensor.numpy()
        for name, tensor in loaded.signatures["serving_default"](
            **{k: tf.constant(v) for k, v in columns.items()}).items()
    }
    by_rest = rest.predict("taxi", rows)
    by_grpc = grpc_client.predict("taxi", rows)
    assert by_rest["probabilities"].shape == (200,)
    for served in (by_rest, by_grpc):
        np.testing.assert_allclose(served["probabilities"], in_process["probabilities"],
                                   atol=1e-6, rtol=0)
        np.testing.assert_array_equal(served["classes"], in_process["classes"])
    # The rows are not all alike, so agreement is not trivial.
    assert np.ptp(in_process["probabilities"]) > 0.1
