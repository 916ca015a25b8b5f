"""Two costs on the per-request path of ``skewless serve``, measured in one process.

- A full garbage collection with a model loaded, before and after ``gc.freeze()`` (what the
  model manager does after each load): the pause every thread takes when the collector's
  oldest generation fills up.
- Decoding a REST Predict body of 1, 8 and 64 taxi rows into tensors (``rest_codec``).
- Decoding the inputs of a gRPC PredictRequest of 1, 8 and 64 rows (one TensorProto per
  feature, typed values) into arrays (``tensors.to_ndarray``), as the gRPC front end does.

    .venv/bin/python benchmarks/front_end.py

Uses the taxi-like example model of the tests (exported to a temporary folder).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The example model is a test fixture (tests/serving/example_models.py), not installed code.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _best_microseconds(call, repeat: int = 5, number: int = 2000) -> float:
    for _ in range(number // 4):
        call()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            call()
        best = min(best, (time.perf_counter() - start) / number * 1e6)
    return best


def main() -> None:
    from tensorflow_serving.apis import predict_pb2

    from skewless.serving import rest_codec, tensors
    from skewless.serving.servable import LoadedModel
    from tests.serving import example_models

    folder = tempfile.mkdtemp(prefix="skewless-front-end-")
    model = LoadedModel.load("taxi", 1, example_models.export_taxi_model(os.path.join(folder, "1")))

    def full_collection_ms() -> float:
        start = time.perf_counter()
        gc.collect()
        return (time.perf_counter() - start) * 1e3

    gc.collect()
    tracked = len(gc.get_objects())
    before = [full_collection_ms() for _ in range(5)]
    gc.freeze()
    after = [full_collection_ms() for _ in range(5)]
    print(f"objects tracked by the collector: {tracked:,}")
    print(f"full collection before gc.freeze(): {min(before):.1f}-{max(before):.1f} ms")
    print(f"full collection after gc.freeze():  {min(after):.3f}-{max(after):.3f} ms")
    gc.unfreeze()

    signature = model.signatures["serving_default"]
    for rows in (1, 8, 64):
        body = json.dumps({"instances": example_models.taxi_rows(rows)}).encode()

        def decode(body=body):
            doc = rest_codec.parse_json(body)
            return rest_codec.decode_predict_request(doc, signature.inputs)

        print(f"REST decode of {rows:2d} rows: {_best_microseconds(decode):.1f} us")
    for rows in (1, 8, 64):
        request = predict_pb2.PredictRequest()
        for name, column in example_models.taxi_columns(example_models.taxi_rows(rows)).items():
            tensors.fill_tensor_proto(request.inputs[name], column)
        request = predict_pb2.PredictRequest.FromString(request.SerializeToString())

        def decode_grpc(request=request):
            return {alias: tensors.to_ndarray(proto, alias)
                    for alias, proto in request.inputs.items()}

        print(f"gRPC decode of {rows:2d} rows ({len(request.inputs)} TensorProtos): "
              f"{_best_microseconds(decode_grpc):.1f} us")
    model.close()


if __name__ == "__main__":
    main()
