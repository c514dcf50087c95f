"""Dynamic micro-batching: concurrent requests share one model call, and a full queue says so at once.

Requests decode in their own threads, then queue their model input here. A worker takes everything
queued (up to `max_batch_size`), waiting at most `max_wait_ms` for more only when it is idle, and runs
the batch in a model thread; `parallel` workers run that many batches side by side (one per inference
thread, `ModelRunner.parallel_calls`). Under load, batches fill by themselves while others run;
a lone request waits `max_wait_ms` at most, and not at all when no other request is being decoded.
The queue is bounded: when it is full, `submit` raises `QueueFullError` immediately, so latency cannot
grow without bound (the API answers 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """More inputs are waiting than the queue allows, or more work than can be answered in time; retry
    after `retry_after_seconds`."""

    def __init__(self, message: str, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


@dataclass(frozen=True)
class BatchTiming:
    """When an input was queued, when its model call started and ended (time.time_ns), and its batch size."""

    queued_ns: int
    started_ns: int
    finished_ns: int
    batch_size: int


@dataclass
class _Pending:
    item: np.ndarray
    future: asyncio.Future[tuple[np.ndarray, BatchTiming]]
    queued_at: float
    queued_ns: int


@dataclass(frozen=True)
class BatchStats:
    """What the last batches looked like; for tests and metrics."""

    batches: int
    items: int
    largest: int


class MicroBatcher:
    def __init__(
        self,
        run: Callable[[np.ndarray], Awaitable[np.ndarray]],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,  # QUEUE_MAX
        more_coming: Callable[[], bool] | None = None,
        parallel: int = 1,
    ) -> None:
        self._run = run
        self.parallel = parallel  # batches in the model at once: one worker each
        # Whether other requests are on their way (decoding now): waiting for company is pointless if not.
        self._more_coming = more_coming or (lambda: True)
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self.batches = 0
        self.items = 0
        self.largest = 0
        self.on_batch: Callable[[int, list[float]], None] | None = None

    @property
    def depth(self) -> int:
        """Inputs waiting for a model call (not counting the batch running now)."""
        return self._queue.qsize()

    @property
    def stats(self) -> BatchStats:
        return BatchStats(self.batches, self.items, self.largest)

    def start(self) -> None:
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"micro-batcher-{i}") for i in range(self.parallel)
            ]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers = []
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("the service is stopping"))

    async def submit(self, item: np.ndarray) -> np.ndarray:
        """The model's output row for one input; QueueFullError at once when the queue is full."""
        row, _ = await self.submit_timed(item)
        return row

    async def submit_timed(self, item: np.ndarray) -> tuple[np.ndarray, BatchTiming]:
        """Like `submit`, with when it waited and ran (for tracing)."""
        if self._queue.qsize() >= self.max_queue:
            raise QueueFullError(f"{self.max_queue} images are already waiting for the model")
        if not self._workers:
            raise RuntimeError("the batcher is not running")
        future: asyncio.Future[tuple[np.ndarray, BatchTiming]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(item, future, time.perf_counter(), time.time_ns()))
        return await future

    async def _work(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < self.max_batch_size:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or not self._more_coming():
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            live = [p for p in batch if not p.future.done()]  # a cancelled request needs no answer
            if live:
                await self._run_batch(live)

    async def _run_batch(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        started_ns = time.time_ns()
        try:
            outputs = await self._run(np.stack([p.item for p in batch]))
        except asyncio.CancelledError:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError("the service is stopping"))
            raise
        except Exception as exc:  # one bad batch fails its requests, never the worker
            log.exception("model call failed for a batch of %d", len(batch))
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        self.batches += 1
        self.items += len(batch)
        self.largest = max(self.largest, len(batch))
        if self.on_batch is not None:
            self.on_batch(len(batch), [started - p.queued_at for p in batch])
        finished_ns = time.time_ns()
        for pending, row in zip(batch, outputs, strict=True):
            if not pending.future.done():
                pending.future.set_result(
                    (row, BatchTiming(pending.queued_ns, started_ns, finished_ns, len(batch)))
                )
