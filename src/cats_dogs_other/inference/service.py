"""The async face of the engine: decoding and inference run in worker threads, never on the event loop.

Each request decodes in a thread of its own (Pillow releases the GIL), so one request's decode overlaps
another's inference; decoded inputs then go through the `MicroBatcher`, which runs one model call at a
time over everything queued, because ONNX Runtime already spreads one call over every core.
Decode threads share one `MemoryBudget`: many large images, in one request or across clients, wait
their turn instead of being decoded all at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import numpy as np
from opentelemetry import trace

from cats_dogs_other.cpu import available_cores
from cats_dogs_other.inference.batching import MicroBatcher, QueueFullError
from cats_dogs_other.inference.budget import MemoryBudget
from cats_dogs_other.inference.classifier import ImageClassifier, Prediction
from cats_dogs_other.inference.decode import DEFAULT_DECODE_MEMORY_BYTES, InvalidImageError
from cats_dogs_other.observability.metrics import ServiceMetrics

T = TypeVar("T")


@dataclass(frozen=True)
class BatchingConfig:
    """Defaults chosen by measurement (BENCHMARKS.md): batch 4 keeps p99 within 1.5x p50 at saturation."""

    max_batch_size: int = 4
    max_wait_ms: float = 2.0
    max_queue: int = 128


class InferenceService:
    def __init__(
        self,
        classifier: ImageClassifier,
        max_pixels: int | None = None,
        batching: BatchingConfig | None = None,
        metrics: ServiceMetrics | None = None,
        tracer: trace.Tracer | None = None,
        decode_memory_bytes: int = DEFAULT_DECODE_MEMORY_BYTES,
    ) -> None:
        self.classifier = classifier
        self.budget = MemoryBudget(decode_memory_bytes)
        self.tracer = tracer or trace.NoOpTracer()
        self.max_pixels = max_pixels or classifier.max_pixels
        batching = batching or BatchingConfig()
        self.max_in_flight = batching.max_queue
        self.in_flight = 0
        self._decoders = anyio.CapacityLimiter(available_cores())
        self._model = anyio.CapacityLimiter(1)
        self.batcher = MicroBatcher(
            self.run,
            max_batch_size=batching.max_batch_size,
            max_wait_ms=batching.max_wait_ms,
            max_queue=batching.max_queue,
            more_coming=lambda: self.decoding > 0,
        )
        self.decoding = 0
        self.metrics = metrics
        if metrics is not None:
            self.batcher.on_batch = metrics.observe_batch
            metrics.queue_depth.set_function(lambda: self.batcher.depth)
            metrics.in_flight.set_function(lambda: self.in_flight)
            metrics.decode_memory.set_function(lambda: self.budget.in_use)

    @contextmanager
    def admission(self) -> Iterator[None]:
        """Hold one of `max_queue` places for a request's whole life (read, decode, queue, model).

        Bounding requests rather than only the model queue keeps every stage bounded: past the limit a
        request is refused before its body is read, so overload answers fast instead of piling up.
        """
        if self.in_flight >= self.max_in_flight:
            raise QueueFullError(f"{self.in_flight} requests are already in progress")
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    async def decode(self, data: bytes) -> np.ndarray:
        self.decoding += 1
        try:
            with self.tracer.start_as_current_span("decode", attributes={"image.bytes": len(data)}):
                return await anyio.to_thread.run_sync(
                    self.classifier.decode, data, self.max_pixels, self.budget, limiter=self._decoders
                )
        except InvalidImageError as exc:
            raise exc.detached() from None  # not the failed decode's frames (InvalidImageError.detached)
        finally:
            self.decoding -= 1

    async def _classify(self, decoded: np.ndarray) -> Prediction:
        """Through the batcher; the wait and the model call become spans with their real times."""
        row, timing = await self.batcher.submit_timed(decoded)
        self.tracer.start_span("queue_wait", start_time=timing.queued_ns).end(end_time=timing.started_ns)
        inference = self.tracer.start_span(
            "inference", start_time=timing.started_ns, attributes={"batch.size": timing.batch_size}
        )
        inference.end(end_time=timing.finished_ns)
        return self.classifier.to_prediction(row)

    async def run(self, batch: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        scores = await anyio.to_thread.run_sync(self.classifier.run, batch, limiter=self._model)
        if self.metrics is not None:
            self.metrics.model_latency.observe(time.perf_counter() - started)
        return scores

    async def predict(self, data: bytes) -> Prediction:
        """One encoded image to its prediction; InvalidImageError for bad input, QueueFullError when busy."""
        return await self._classify(await self.decode(data))

    async def predict_each(self, images: Sequence[bytes]) -> list[Prediction | InvalidImageError]:
        """Several images; a bad image gets its error in its place, the others are still answered.

        The images are worked on in one task group: if one fails for another reason (the service is
        full, say) or the request is cancelled (its client left), the others stop too.
        """
        results: list[Prediction | InvalidImageError | None] = [None] * len(images)

        async def one(index: int, data: bytes) -> None:
            try:
                decoded = await self.decode(data)
            except InvalidImageError as exc:
                results[index] = exc
                return
            results[index] = await self._classify(decoded)

        await _in_task_group(one, images)
        return _all_done(results)

    async def predict_all(self, images: Sequence[bytes]) -> list[Prediction]:
        """Several images, all or nothing: the first bad image raises InvalidImageError (its message
        names its position) and the work on the others stops."""
        results: list[Prediction | None] = [None] * len(images)

        async def one(index: int, data: bytes) -> None:
            try:
                decoded = await self.decode(data)
            except InvalidImageError as exc:
                raise InvalidImageError(exc.kind, f"Image {index}: {exc}") from exc
            results[index] = await self._classify(decoded)

        await _in_task_group(one, images)
        return _all_done(results)


def _all_done(results: list[T | None]) -> list[T]:
    done = [result for result in results if result is not None]
    assert len(done) == len(results), "a task group ended with work left undone"
    return done


async def _in_task_group(
    work: Callable[[int, bytes], Coroutine[Any, Any, None]], images: Sequence[bytes]
) -> None:
    """Run `work` on every image at once; the first exception cancels the rest and is raised as itself
    (not wrapped in an ExceptionGroup), so the API's handlers see the error they know."""
    try:
        async with asyncio.TaskGroup() as group:
            for index, data in enumerate(images):
                group.create_task(work(index, data))
    except BaseExceptionGroup as failed:
        first = failed.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
