"""Dynamic batching: concurrent requests for one model version and signature share a model call.

The pure functions (:func:`merge_inputs`, :func:`split_outputs`, :func:`split_task`,
:func:`padded_size`, :func:`pad_inputs`) do the tensor work. :class:`BatchScheduler` is the
thread-safe scheduler, following TF Serving's shared batch scheduler: one queue per (model version,
signature, fed and fetched tensors, trailing shapes and dtypes); a queue holds at most
``max_enqueued_batches`` batches, the open one included; a batch is run when it is full, or
when a batch thread is free and its oldest task has waited ``batch_timeout_micros``; a task
that does not fit a full queue is rejected at once with UNAVAILABLE.

Submitted from an event loop (``loop=``), a task's future is an asyncio future: the batch threads
are woken once per loop iteration rather than once per task, so that the requests read in one
iteration share a batch, and a batch settles all its futures with one hand-off to the loop. Each
cross-thread wake-up is a system call that holds the GIL; per request they cost more than the
front end's own work.
"""

from __future__ import annotations

import asyncio
import bisect
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from skewless.serving.config import BatchingConfig
from skewless.serving.errors import ServingError, invalid_argument, unavailable

QUEUE_FULL_MESSAGE = "The batch scheduling queue to which this task was submitted is full"

RunFn = Callable[[list[np.ndarray]], list[np.ndarray]]


def merge_inputs(tasks: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Concatenates the inputs of several tasks along the batch dimension.

    Args:
        tasks: Per task, its input arrays in a fixed order.

    Returns:
        One array per input.
    """
    if len(tasks) == 1:
        return list(tasks[0])
    return [np.concatenate(column) for column in zip(*tasks, strict=True)]


def split_outputs(outputs: Sequence[np.ndarray], sizes: Sequence[int]) -> list[list[np.ndarray]]:
    """Splits batched outputs back into per-task outputs (padding rows at the end are dropped).

    Args:
        outputs: The batched output arrays.
        sizes: The batch size of each task, in batch order.

    Returns:
        Per task, its output arrays.

    Raises:
        ServingError: INTERNAL when an output has no batch dimension or too few rows.
    """
    total = sum(sizes)
    for output in outputs:
        if output.ndim == 0 or output.shape[0] < total:
            raise ServingError(
                _internal(),
                "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                "dimension sizes of the input tensors",
            )
    if len(sizes) == 1:
        return [[o if o.shape[0] == total else o[:total] for o in outputs]]
    bounds = np.cumsum([0, *sizes])
    return [[o[bounds[i]:bounds[i + 1]] for o in outputs] for i in range(len(sizes))]


def _internal():
    import grpc

    return grpc.StatusCode.INTERNAL


def split_task(inputs: Sequence[np.ndarray], size: int, chunk: int) -> list[list[np.ndarray]]:
    """Splits a task's inputs into pieces of at most ``chunk`` rows."""
    return [[x[start:start + chunk] for x in inputs] for start in range(0, size, chunk)]


def padded_size(size: int, allowed_batch_sizes: Sequence[int]) -> int:
    """The smallest allowed batch size that holds ``size`` rows (``size`` if none given)."""
    if not allowed_batch_sizes:
        return size
    index = bisect.bisect_left(allowed_batch_sizes, size)
    return allowed_batch_sizes[min(index, len(allowed_batch_sizes) - 1)]


def pad_inputs(inputs: Sequence[np.ndarray], size: int, target: int) -> list[np.ndarray]:
    """Pads a batch to ``target`` rows by repeating its first row, as TF Serving does."""
    if target <= size:
        return list(inputs)
    return [np.concatenate([x, np.repeat(x[:1], target - size, axis=0)]) for x in inputs]


def batch_key(base: Hashable, inputs: Sequence[np.ndarray]) -> Hashable:
    """The queue of a task: tasks are only merged when trailing shapes and dtypes agree."""
    return (base, tuple((x.dtype.str, x.shape[1:]) for x in inputs))


@dataclass(eq=False)
class _Task:
    inputs: list[np.ndarray]
    size: int
    future: Future | asyncio.Future
    enqueued: float


def _start(future: Future | asyncio.Future) -> bool:
    """Whether a task is still wanted (not cancelled); a concurrent future is marked running."""
    if isinstance(future, Future):
        return future.set_running_or_notify_cancel()
    return not future.cancelled()


def _settle_on_loop(outcomes: list[tuple[asyncio.Future, object, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        if future.done():  # cancelled while its batch ran
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def _settle(tasks: Sequence[_Task], results: Sequence[object], error: BaseException | None) -> None:
    """Completes the futures: concurrent ones here, asyncio ones with one hand-off per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for task, result in zip(tasks, results, strict=True):
        future = task.future
        if isinstance(future, Future):
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
        else:
            by_loop.setdefault(future.get_loop(), []).append((future, result, error))
    for loop, outcomes in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_on_loop, outcomes)
        except RuntimeError:  # the loop is closed: nobody awaits these any more
            pass


@dataclass(eq=False)
class _Batch:
    deadline: float
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0
    closed: bool = False


@dataclass(eq=False)
class _Queue:
    run: RunFn
    model_label: str
    batches: deque[_Batch] = field(default_factory=deque)


def _gather(parts: list[Future]) -> Future:
    """A future of the row-wise concatenation of the parts' outputs (or the first error)."""
    combined: Future = Future()
    remaining = [len(parts)]
    lock = threading.Lock()

    def done(_: Future) -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0]:
                return
        if combined.cancelled():
            return
        for part in parts:
            if part.cancelled() or part.exception() is not None:
                for other in parts:
                    other.cancel()
                error = part.exception() if not part.cancelled() else unavailable(
                    "A part of the request was cancelled")
                combined.set_exception(error)
                return
        results = [part.result() for part in parts]
        combined.set_result([np.concatenate(column) for column in zip(*results, strict=True)])

    def cancel_parts(future: Future) -> None:
        if future.cancelled():
            for part in parts:
                part.cancel()

    combined.add_done_callback(cancel_parts)
    for part in parts:
        part.add_done_callback(done)
    return combined


class BatchScheduler:
    """Merges concurrent tasks into batches and runs them on its own batch threads.

    Thread-safe: tasks may be submitted from the event loop or from gRPC handler threads.

    Args:
        config: The batching parameters.
        on_batch: Called from a batch thread with (model label, batch size, padded size,
            queueing delays in seconds) for metrics.
    """

    def __init__(
        self,
        config: BatchingConfig,
        on_batch: Callable[[str, int, int, list[float]], None] | None = None,
    ) -> None:
        self._config = config
        self._on_batch = on_batch
        self._queues: dict[Hashable, _Queue] = {}
        self._condition = threading.Condition()
        self._timeout = config.batch_timeout_micros / 1e6
        self._chunk = config.execution_batch_size
        self._closed = False
        self._wake_pending: set[asyncio.AbstractEventLoop] = set()
        self._threads = [
            threading.Thread(target=self._work, name=f"{config.thread_pool_name}-{i}",
                             daemon=True)
            for i in range(config.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Stops the batch threads once the queued batches are processed."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join()

    def submit(
        self,
        key: Hashable,
        run: RunFn,
        inputs: list[np.ndarray],
        size: int,
        model_label: str = "",
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Future | asyncio.Future:
        """Queues one task; its future resolves to the task's own output arrays.

        Args:
            key: Identifies the queue (model version, signature, fed and fetched tensors).
            run: Runs a merged batch on the model (called in a batch thread).
            inputs: The task's input arrays, batch-first.
            size: The task's batch size.
            model_label: The model name, for metrics.
            loop: The running event loop, when called from it: the future is then an asyncio
                future (a concurrent one for a task split into pieces).

        Returns:
            A future of the output arrays; cancelling it drops the task if not yet running.

        Raises:
            ServingError: UNAVAILABLE at once when the queue is full; INVALID_ARGUMENT for a
                task larger than the batch size when splitting is off.
        """
        if size <= self._chunk:
            return self._enqueue([(key, run, inputs, size, model_label)], loop)[0]
        if not self._config.enable_large_batch_splitting:
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size "
                f"{self._config.max_batch_size}"
            )
        pieces = split_task(inputs, size, self._chunk)
        return _gather(self._enqueue(
            [(key, run, piece, piece[0].shape[0], model_label) for piece in pieces]
        ))

    def _enqueue(
        self, tasks: list[tuple], loop: asyncio.AbstractEventLoop | None = None
    ) -> list[Future | asyncio.Future]:
        with self._condition:
            if self._closed:
                raise unavailable("The batch scheduler is shutting down")
            placed: list[tuple[_Batch, _Task]] = []
            try:
                for key, run, inputs, size, label in tasks:
                    future = loop.create_future() if loop is not None else Future()
                    placed.append(self._place(key, run, inputs, size, label, future))
            except ServingError:
                for batch, task in placed:  # all or nothing for a split task
                    batch.tasks.remove(task)
                    batch.size -= task.size
                raise
            futures = [task.future for _, task in placed]
            if loop is None:
                self._condition.notify(len(futures))
        if loop is not None and loop not in self._wake_pending:
            self._wake_pending.add(loop)
            loop.call_soon(self._wake, loop)
        return futures

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wakes the batch threads once for all the tasks a loop iteration submitted."""
        self._wake_pending.discard(loop)
        with self._condition:
            self._condition.notify(len(self._threads))

    def _place(self, key, run, inputs, size, label, future) -> tuple[_Batch, _Task]:
        queue_key = batch_key(key, inputs)
        queue = self._queues.get(queue_key)
        if queue is None:
            if len(self._queues) > 256:
                self._queues = {k: q for k, q in self._queues.items() if q.batches}
            queue = self._queues[queue_key] = _Queue(run, label)
        now = time.monotonic()
        batches = queue.batches
        batch = batches[-1] if batches else None
        if batch is None or batch.closed or batch.size + size > self._chunk:
            if len(batches) >= self._config.max_enqueued_batches:
                raise unavailable(QUEUE_FULL_MESSAGE)
            if batch is not None:
                batch.closed = True
            batch = _Batch(deadline=now + self._timeout)
            batches.append(batch)
        task = _Task(inputs, size, future, now)
        batch.tasks.append(task)
        batch.size += size
        if batch.size >= self._chunk:
            batch.closed = True
        return batch, task

    def _take(self) -> tuple[_Queue, _Batch] | float | None:
        """A ready batch, else the seconds until the next deadline (None: nothing queued)."""
        now = time.monotonic()
        wait = None
        for queue in self._queues.values():
            if not queue.batches:
                continue
            head = queue.batches[0]
            if head.closed or head.deadline <= now or len(queue.batches) > 1:
                queue.batches.popleft()
                head.closed = True
                return queue, head
            wait = head.deadline - now if wait is None else min(wait, head.deadline - now)
        return wait

    def _work(self) -> None:
        while True:
            with self._condition:
                while True:
                    taken = self._take()
                    if isinstance(taken, tuple):
                        break
                    if self._closed:
                        return
                    self._condition.wait(taken)
            self._process(*taken)

    def _process(self, queue: _Queue, batch: _Batch) -> None:
        started = time.monotonic()
        live = [t for t in batch.tasks if _start(t.future)]
        if not live:
            return
        sizes = [t.size for t in live]
        total = sum(sizes)
        try:
            target = padded_size(total, self._config.allowed_batch_sizes)
            merged = pad_inputs(merge_inputs([t.inputs for t in live]), total, target)
            outputs = split_outputs(queue.run(merged), sizes)
        except ServingError as error:
            _settle(live, [None] * len(live), error)
            return
        except Exception as error:  # noqa: BLE001 - reported to every caller of the batch
            failure = ServingError(_internal(), f"{type(error).__name__}: {error}")
            _settle(live, [None] * len(live), failure)
            return
        _settle(live, outputs, None)
        if self._on_batch is not None:
            self._on_batch(queue.model_label, total, target, [started - t.enqueued for t in live])
