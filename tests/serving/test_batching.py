"""The batch scheduler on its own: who shares a batch, and how every task's future settles."""

from __future__ import annotations

import asyncio
import threading

import grpc
import numpy as np
import pytest

from skewless.serving.batching import BatchScheduler
from skewless.serving.config import BatchingConfig
from skewless.serving.errors import ServingError


class Recorder:
    """A model that doubles its input and records the batch sizes it was called with."""

    def __init__(self, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self._gate = gate
        self._fail = fail

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if self._gate is not None:
            self._gate.wait(10)
        self.sizes.append(len(inputs[0]))
        if self._fail:
            raise ValueError("the model broke")
        return [inputs[0] * 2]


@pytest.fixture()
def scheduler():
    batcher = BatchScheduler(BatchingConfig(max_batch_size=64, num_batch_threads=1))
    yield batcher
    batcher.close()


def _row(i: int) -> list[np.ndarray]:
    return [np.array([[float(i)]], dtype=np.float32)]


def test_tasks_submitted_in_one_loop_iteration_share_one_batch_and_get_their_own_rows(scheduler):
    model = Recorder()

    async def main():
        loop = asyncio.get_running_loop()
        futures = [scheduler.submit("m", model, _row(i), 1, loop=loop) for i in range(10)]
        return await asyncio.wait_for(asyncio.gather(*futures), 10)

    outputs = asyncio.run(main())
    assert model.sizes == [10]
    assert [float(out[0][0, 0]) for out in outputs] == [2.0 * i for i in range(10)]


def test_a_cancelled_task_is_dropped_and_the_others_still_answer(scheduler):
    gate = threading.Event()
    model = Recorder(gate)

    async def main():
        loop = asyncio.get_running_loop()
        first = scheduler.submit("m", model, _row(0), 1, loop=loop)
        await asyncio.sleep(0.05)  # the batch thread holds the first batch at the gate
        waiting = [scheduler.submit("m", model, _row(i), 1, loop=loop) for i in (1, 2, 3)]
        waiting[1].cancel()
        gate.set()
        return await asyncio.wait_for(asyncio.gather(first, waiting[0], waiting[2]), 10)

    first, one, three = asyncio.run(main())
    assert model.sizes == [1, 2]
    assert (float(first[0][0, 0]), float(one[0][0, 0]), float(three[0][0, 0])) == (0, 2, 6)


def test_a_model_error_reaches_every_task_of_the_batch_as_internal(scheduler):
    model = Recorder(fail=True)

    async def main():
        loop = asyncio.get_running_loop()
        futures = [scheduler.submit("m", model, _row(i), 1, loop=loop) for i in range(3)]
        return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)

    errors = asyncio.run(main())
    assert all(isinstance(e, ServingError) for e in errors)
    assert {(e.code, e.message) for e in errors} == {
        (grpc.StatusCode.INTERNAL, "ValueError: the model broke")
    }


def test_threads_without_a_loop_get_concurrent_futures(scheduler):
    model = Recorder()
    futures = [scheduler.submit("m", model, _row(i), 1) for i in range(4)]
    assert [float(f.result(10)[0][0, 0]) for f in futures] == [0.0, 2.0, 4.0, 6.0]
    assert sum(model.sizes) == 4


def test_a_task_larger_than_a_batch_is_split_and_gathered_from_the_loop():
    batcher = BatchScheduler(BatchingConfig(
        max_batch_size=4, num_batch_threads=1, enable_large_batch_splitting=True,
        max_execution_batch_size=4))
    model = Recorder()

    async def main():
        loop = asyncio.get_running_loop()
        rows = [np.arange(10, dtype=np.float32).reshape(10, 1)]
        future = batcher.submit("m", model, rows, 10, loop=loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), 10)

    try:
        (output,) = asyncio.run(main())
    finally:
        batcher.close()
    assert output[:, 0].tolist() == [2.0 * i for i in range(10)]
    assert model.sizes == [4, 4, 2]
