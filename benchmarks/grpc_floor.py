"""The gRPC floor of the serving benchmark: a ``grpc.aio`` PredictionService that does no work.

Every Predict is parsed as usual and answered with the same stored ``PredictResponse`` (one that
`skewless serve` gave for the benchmark's rows), with no model, no decoding and no batching. Its
rows/s are the most any Python gRPC front end on ``grpc.aio`` reaches on the machine under the same
load generator: the transport's own ceiling, beside which the skewless gRPC cell is read.

    .venv/bin/python benchmarks/grpc_floor.py --port 8700 --response response.pb
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


class EmptyPredict(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, response: predict_pb2.PredictResponse) -> None:
        self._response = response

    async def Predict(self, request, context):  # noqa: N802
        return self._response


async def serve(port: int, response: predict_pb2.PredictResponse) -> None:
    server = grpc.aio.server()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        EmptyPredict(response), server
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--response", required=True, help="A serialized PredictResponse.")
    args = parser.parse_args()
    with open(args.response, "rb") as handle:
        response = predict_pb2.PredictResponse.FromString(handle.read())
    asyncio.run(serve(args.port, response))


if __name__ == "__main__":
    main()
