"""The batch scheduler on its own: who shares a batch, and how every task's future settles.

The scheduler lives on an event loop: each test submits from a running loop, as the front ends do.
"""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import numpy as np
import pytest

from skewless.serving.batching import (
    QUEUE_FULL_MESSAGE,
    BatchScheduler,
    merge_inputs,
    pad_inputs,
    padded_size,
    split_outputs,
    split_task,
)
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
        futures = [scheduler.submit("m", model, _row(i), 1) for i in range(10)]
        return await asyncio.wait_for(asyncio.gather(*futures), 10)

    outputs = asyncio.run(main())
    assert model.sizes == [10]
    assert [float(out[0][0, 0]) for out in outputs] == [2.0 * i for i in range(10)]


def test_a_cancelled_task_is_dropped_and_the_others_still_answer(scheduler):
    gate = threading.Event()
    model = Recorder(gate)

    async def main():
        first = scheduler.submit("m", model, _row(0), 1)
        await asyncio.sleep(0.05)  # the batch thread holds the first batch at the gate
        waiting = [scheduler.submit("m", model, _row(i), 1) for i in (1, 2, 3)]
        waiting[1].cancel()
        gate.set()
        return await asyncio.wait_for(asyncio.gather(first, waiting[0], waiting[2]), 10)

    first, one, three = asyncio.run(main())
    assert model.sizes == [1, 2]
    assert (float(first[0][0, 0]), float(one[0][0, 0]), float(three[0][0, 0])) == (0, 2, 6)


def test_a_model_error_reaches_every_task_of_the_batch_as_internal(scheduler):
    model = Recorder(fail=True)

    async def main():
        futures = [scheduler.submit("m", model, _row(i), 1) for i in range(3)]
        return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)

    errors = asyncio.run(main())
    assert all(isinstance(e, ServingError) for e in errors)
    assert {(e.code, e.message) for e in errors} == {
        (grpc.StatusCode.INTERNAL, "ValueError: the model broke")
    }


@pytest.fixture()
def batcher():
    """Makes schedulers of given settings (with the batch sizes they record); closes them."""
    made: list[BatchScheduler] = []

    def make(**settings) -> tuple[BatchScheduler, list[int]]:
        sizes: list[int] = []
        made.append(BatchScheduler(BatchingConfig(**settings),
                                   lambda m, s, p, d: sizes.append(s)))
        return made[-1], sizes

    yield make
    for scheduler in made:
        scheduler.close()


def test_a_busy_batch_thread_lets_waiting_tasks_fill_full_batches(batcher):
    gate = threading.Event()
    model = Recorder(gate)
    scheduler, sizes = batcher(max_batch_size=4, num_batch_threads=1, max_enqueued_batches=10)

    async def main():
        first = scheduler.submit("m", model, _row(0), 1)
        await asyncio.sleep(0.05)  # the only batch thread holds the first batch at the gate
        rest = [scheduler.submit("m", model, _row(i), 1) for i in range(1, 10)]
        gate.set()
        return await asyncio.wait_for(asyncio.gather(first, *rest), 10)

    outputs = asyncio.run(main())
    assert [float(out[0][0, 0]) for out in outputs] == [2.0 * i for i in range(10)]
    assert sizes == [1, 4, 4, 1]


def test_a_full_queue_rejects_at_once_with_unavailable(batcher):
    gate = threading.Event()
    model = Recorder(gate)
    scheduler, _ = batcher(max_batch_size=1, num_batch_threads=1, max_enqueued_batches=1)

    async def main():
        first = scheduler.submit("m", model, _row(1), 1)
        await asyncio.sleep(0.05)  # running on the only thread
        queued = scheduler.submit("m", model, _row(2), 1)
        started = time.monotonic()
        with pytest.raises(ServingError) as info:
            scheduler.submit("m", model, _row(3), 1)
        elapsed = time.monotonic() - started
        gate.set()
        answers = await asyncio.wait_for(asyncio.gather(first, queued), 10)
        return info.value, elapsed, answers

    error, elapsed, (first, queued) = asyncio.run(main())
    assert (error.code, error.message) == (grpc.StatusCode.UNAVAILABLE, QUEUE_FULL_MESSAGE)
    assert elapsed < 0.1
    assert (float(first[0][0, 0]), float(queued[0][0, 0])) == (2.0, 4.0)


@pytest.mark.parametrize(
    ("allowed", "rows", "model_sizes", "recorded"),
    [((), 10, [4, 4, 2], [4, 4, 2]),
     ((2, 4), 11, [4, 4, 4], [4, 4, 3])],  # the 3-row rest is padded to 4
    ids=["split", "split-and-pad"],
)
def test_large_tasks_are_split_gathered_and_the_rest_padded_to_an_allowed_size(
        batcher, allowed, rows, model_sizes, recorded):
    model = Recorder()
    scheduler, sizes = batcher(max_batch_size=4, allowed_batch_sizes=allowed, num_batch_threads=1)

    async def main():
        inputs = [np.arange(rows, dtype=np.float32).reshape(rows, 1)]
        return await asyncio.wait_for(scheduler.submit("m", model, inputs, rows), 10)

    (output,) = asyncio.run(main())
    assert output[:, 0].tolist() == [2.0 * i for i in range(rows)]
    assert model.sizes == model_sizes and sizes == recorded


def test_the_batch_timeout_waits_for_more_tasks(batcher):
    model = Recorder()
    scheduler, sizes = batcher(max_batch_size=8, batch_timeout_micros=200_000,
                               num_batch_threads=1)

    async def main():
        first = scheduler.submit("m", model, _row(1), 1)
        await asyncio.sleep(0.05)
        second = scheduler.submit("m", model, _row(2), 1)
        return await asyncio.wait_for(asyncio.gather(first, second), 10)

    first, second = asyncio.run(main())
    assert (float(first[0][0, 0]), float(second[0][0, 0])) == (2.0, 4.0)
    assert sizes == [2]  # one batch: the first task waited for the second


def test_without_splitting_a_large_task_is_refused(batcher):
    scheduler, _ = batcher(max_batch_size=4, enable_large_batch_splitting=False)

    async def main():
        with pytest.raises(ServingError) as info:
            scheduler.submit("m", Recorder(), [np.arange(5.0)], 5)
        return info.value

    error = asyncio.run(main())
    assert error.message == "Task size 5 is larger than maximum input batch size 4"


def test_a_closed_scheduler_refuses_new_tasks(batcher):
    scheduler, _ = batcher(max_batch_size=4)
    scheduler.close()

    async def main():
        with pytest.raises(ServingError) as info:
            scheduler.submit("m", Recorder(), _row(0), 1)
        return info.value

    error = asyncio.run(main())
    assert error.code == grpc.StatusCode.UNAVAILABLE


def test_batch_pure_functions():
    a, b = [np.array([1, 2]), np.array([[1], [2]])], [np.array([3]), np.array([[3]])]
    merged = merge_inputs([a, b])
    assert merged[0].tolist() == [1, 2, 3] and merged[1].shape == (3, 1)
    padded = pad_inputs(merged, 3, 8)
    assert padded[0].tolist() == [1, 2, 3, 1, 1, 1, 1, 1]
    parts = split_outputs([padded[0] * 10], [2, 1])
    assert [p[0].tolist() for p in parts] == [[10, 20], [30]]
    assert [padded_size(n, (2, 4, 8)) for n in (1, 2, 3, 8)] == [2, 2, 4, 8]
    assert [p[0].tolist() for p in split_task([np.arange(5)], 5, 2)] == [
        [0, 1], [2, 3], [4]]
    with pytest.raises(ServingError):
        split_outputs([np.array(1.0)], [1])
