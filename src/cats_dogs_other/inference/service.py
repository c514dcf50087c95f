"""The async face of the engine: decoding and inference run in worker threads, never on the event loop.

Each request decodes in a thread of its own (Pillow releases the GIL), so one request's decode overlaps
another's inference; decoded inputs then go through the `MicroBatcher`, which runs as many model calls
at once as the runner allows (by default one per core, each on one thread: more throughput than one
call spread over every core, `OnnxRunner`). Admission (`AdmissionControl`) decides by expected wait
which requests may start at all.
Decode threads share one `MemoryBudget`: many large images, in one request or across clients, wait
their turn instead of being decoded all at once. Each request draws on it through its own
`RequestBudget` (`request_budget`), which every call that reads or decodes takes: the memory it
reserves, the seconds of work it spends, what its documents inflate to, whatever route it came by.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

import anyio
import numpy as np
from opentelemetry import trace

from cats_dogs_other.cpu import available_cores
from cats_dogs_other.inference.admission import AdmissionControl
from cats_dogs_other.inference.batching import MicroBatcher
from cats_dogs_other.inference.budget import MemoryBudget, RequestBudget
from cats_dogs_other.inference.classifier import ImageClassifier, ModelInput, Prediction
from cats_dogs_other.inference.decode import InvalidImageError
from cats_dogs_other.inference.documents import (
    Document,
    EmbeddedImage,
    InvalidDocumentError,
    PdfRaster,
    is_pdf,
    read_document,
    too_slow_image,
)
from cats_dogs_other.inference.files import FileOutcome, Outcome, ReadFile, SentFile, outcomes_of
from cats_dogs_other.inference.limits import REQUEST_INFLATION_BYTES, DocumentLimits
from cats_dogs_other.observability.metrics import ServiceMetrics

T = TypeVar("T")


@dataclass(frozen=True)
class BatchingConfig:
    """How requests share model calls; the values come from `Settings` (BATCH_MAX_SIZE, ...)."""

    max_batch_size: int
    max_wait_ms: float
    max_queue: int
    max_queue_wait_ms: float


# Images of one request worked on at once: a request of PDFs may carry hundreds of images, and alone it
# must neither fill the model's queue (QueueFullError is for overload, not for one large request) nor
# hold hundreds of decoded inputs. Sixteen is what /predict carried before documents, so images alone
# behave as before, and it keeps several batches' worth queued.
REQUEST_WINDOW = 16
# What the engine decodes: an encoded image file, or a non-JPEG image of a document.
ImageData = bytes | PdfRaster
# What the engine classifies: a file's image, or a document's (whose work counts against the request's
# time budget: past it, the rest of its documents' images are answered at once with `too_slow`).
ImageItem = ImageData | EmbeddedImage


class EngineSettings(Protocol):
    """What the engine takes from `Settings` (which this package does not import)."""

    max_pixels: int
    decode_memory_bytes: int
    batch_max_size: int
    batch_max_wait_ms: float
    queue_max: int
    max_queue_wait_ms: float

    def document_limits(self) -> DocumentLimits: ...


class InferenceService:
    @classmethod
    def configured(
        cls,
        classifier: ImageClassifier,
        settings: EngineSettings,
        metrics: ServiceMetrics | None = None,
        tracer: trace.Tracer | None = None,
    ) -> InferenceService:
        """The engine as `Settings` configure it: for the service and the CLI alike."""
        return cls(
            classifier,
            max_pixels=settings.max_pixels,
            batching=BatchingConfig(
                settings.batch_max_size,
                settings.batch_max_wait_ms,
                settings.queue_max,
                settings.max_queue_wait_ms,
            ),
            decode_memory_bytes=settings.decode_memory_bytes,
            documents=settings.document_limits(),
            metrics=metrics,
            tracer=tracer,
        )

    def __init__(
        self,
        classifier: ImageClassifier,
        *,
        max_pixels: int,
        batching: BatchingConfig,
        decode_memory_bytes: int,
        documents: DocumentLimits,
        metrics: ServiceMetrics | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.classifier = classifier
        self.budget = MemoryBudget(decode_memory_bytes)
        self.tracer = tracer or trace.NoOpTracer()
        self.max_pixels = max_pixels
        self.document_limits = documents
        self.admission = AdmissionControl(
            max_in_flight=batching.max_queue,
            max_wait_seconds=batching.max_queue_wait_ms / 1000,
            # Never fewer than keep a batch running and the next one filling.
            min_in_flight=2 * batching.max_batch_size,
        )
        # Feedback is paced by its database, not the model: its rate must neither shut predictions out
        # nor be judged by theirs, so it is counted apart, against QUEUE_MAX only.
        self.feedback_admission = AdmissionControl(
            max_in_flight=batching.max_queue, max_wait_seconds=0, min_in_flight=1, by_time=False
        )
        self._decoders = anyio.CapacityLimiter(available_cores())
        # Documents are read one at a time: pypdf parses in Python, holding the GIL, so a second reading
        # thread only contends with the first and with the event loop (BENCHMARKS.md, *One reading
        # thread, and a document's objects freed as soon as it is read*).
        self._readers = anyio.CapacityLimiter(1)
        self._model = anyio.CapacityLimiter(classifier.parallel_calls)
        self.batcher = MicroBatcher(
            self.run,
            max_batch_size=batching.max_batch_size,
            max_wait_ms=batching.max_wait_ms,
            max_queue=batching.max_queue,
            more_coming=lambda: self.decoding > 0,
            parallel=classifier.parallel_calls,
        )
        self.decoding = 0
        self.metrics = metrics
        if metrics is not None:
            self.batcher.on_batch = metrics.observe_batch
            metrics.queue_depth.set_function(lambda: self.batcher.depth)
            metrics.in_flight.set_function(lambda: self.admission.in_flight)
            metrics.admission_limit.set_function(lambda: self.admission.limit)
            metrics.service_rate.set_function(lambda: self.admission.rate.per_second or 0.0)
            metrics.decode_memory.set_function(lambda: self.budget.in_use)

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight

    def start(self) -> None:
        self.batcher.start()

    @property
    def in_use(self) -> int:
        """Requests admitted to this engine and not finished (predictions and feedback)."""
        return self.admission.in_flight + self.feedback_admission.in_flight

    async def stop(self) -> None:
        await self.batcher.stop()

    def request_budget(self) -> RequestBudget:
        """What one request may spend (memory, seconds of work, inflation): one per request, passed to
        every call below that reads or decodes for it."""
        return RequestBudget(self.budget, self.document_limits.seconds, REQUEST_INFLATION_BYTES)

    async def read_document(self, data: bytes, budget: RequestBudget) -> Document:
        """A PDF's images, read in a decode thread (the reader holds the GIL and is CPU-bound).

        InvalidDocumentError for a document that cannot be read; its pages and images are counted.
        """
        with self.tracer.start_as_current_span("extract", attributes={"document.bytes": len(data)}) as span:
            try:
                document = await anyio.to_thread.run_sync(
                    read_document, data, self.document_limits, budget, limiter=self._readers
                )
            except InvalidDocumentError as exc:
                if self.metrics is not None:
                    self.metrics.observe_document(exc.kind.value)
                raise
            span.set_attribute("document.pages", document.pages)
            span.set_attribute("document.images", len(document.images))
        if self.metrics is not None:
            self.metrics.observe_document("read", document.pages, len(document.images))
        return document

    async def decode(self, data: ImageData, budget: RequestBudget, thumbnail: bool = False) -> ModelInput:
        """The model input, and a thumbnail JPEG when asked (`preprocess.thumbnail_jpeg`)."""
        self.decoding += 1
        size = len(data) if isinstance(data, bytes) else data.encoded_bytes
        try:
            with self.tracer.start_as_current_span("decode", attributes={"image.bytes": size}):
                decoded = await anyio.to_thread.run_sync(
                    functools.partial(_timed, budget, self.classifier.prepare, thumbnail=thumbnail),
                    data,
                    self.max_pixels,
                    budget,
                    limiter=self._decoders,
                )
        except InvalidImageError as exc:
            raise exc.detached() from None  # not the failed decode's frames (InvalidImageError.detached)
        finally:
            self.decoding -= 1
        if self.metrics is not None:
            self.metrics.observe_image(decoded.source_pixels, self.classifier.sha256)
        return decoded

    async def training_image(self, data: ImageData, budget: RequestBudget) -> tuple[bytes, int, int]:
        """The image as feedback stores it (PNG, width, height), decoded like a prediction's input."""
        try:
            return await anyio.to_thread.run_sync(
                functools.partial(_timed, budget, self.classifier.training_image),
                data,
                self.max_pixels,
                budget,
                limiter=self._decoders,
            )
        except InvalidImageError as exc:
            raise exc.detached() from None

    async def _classify(self, decoded: np.ndarray, budget: RequestBudget) -> Prediction:
        """Through the batcher; the wait and the model call become spans with their real times, and the
        request is charged its share of the call."""
        row, timing = await self.batcher.submit_timed(decoded)
        budget.charge((timing.finished_ns - timing.started_ns) / 1e9 / max(1, timing.batch_size))
        self.tracer.start_span("queue_wait", start_time=timing.queued_ns).end(end_time=timing.started_ns)
        inference = self.tracer.start_span(
            "inference", start_time=timing.started_ns, attributes={"batch.size": timing.batch_size}
        )
        inference.end(end_time=timing.finished_ns)
        prediction = self.classifier.to_prediction(row)
        if self.metrics is not None:
            top = max(prediction.values)
            self.metrics.observe_prediction(prediction.prediction, top, self.classifier.sha256)
        return prediction

    async def run(self, batch: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        scores = await anyio.to_thread.run_sync(self.classifier.run, batch, limiter=self._model)
        if self.metrics is not None:
            self.metrics.model_latency.observe(time.perf_counter() - started)
        return scores

    async def classify_files(
        self,
        files: Sequence[SentFile],
        budget: RequestBudget,
        *,
        documents: bool = True,
        fail_fast: bool = False,
        thumbnails: bool = False,
    ) -> list[FileOutcome]:
        """One outcome per file, in order: the one path every way in goes through.

        With `documents`, a PDF is read (`read_document`) and its images join the other files' on their
        way to the model, batched with them; a document that cannot be read is its own outcome and the
        other files go on. Without it, every file is an image (ways in that take no documents). Then
        each document image gets its answer in its place, a copy its original's (`files.outcomes_of`).
        `fail_fast` and `thumbnails` as in `classify`.
        """
        read = [
            await self._read_file(file, budget) if documents and is_pdf(file.data) else ReadFile(file)
            for file in files
        ]
        images = [image for file in read for image in file.to_classify()]
        outcomes = await self.classify(images, budget, fail_fast=fail_fast, thumbnails=thumbnails)
        return outcomes_of(read, outcomes)

    async def _read_file(self, file: SentFile, budget: RequestBudget) -> ReadFile:
        try:
            return ReadFile(file, document=await self.read_document(file.data, budget))
        except InvalidDocumentError as exc:
            return ReadFile(file, refused=exc)

    async def classify(
        self,
        images: Sequence[ImageItem],
        budget: RequestBudget,
        *,
        fail_fast: bool = False,
        thumbnails: bool = False,
    ) -> list[Outcome]:
        """Encoded images to their predictions, in order: where every file's images go (`classify_files`).

        A bad image gets its InvalidImageError (with its `index`) in its place and the others are still
        answered; with `fail_fast` the first bad image raises instead and the work on the others stops.
        The images are worked on in one task group: if one fails for another reason (the service is
        full, say) or the request is cancelled (its client left), the others stop too. QueueFullError
        when the model's queue is full. With `thumbnails`, each prediction carries its image's thumbnail.
        """
        if len(images) == 1:  # the common case, without a task group
            return [await self._one(0, images[0], budget, fail_fast, thumbnails)]
        results: list[Outcome | None] = [None] * len(images)
        window = anyio.Semaphore(REQUEST_WINDOW)

        async def one(index: int, item: ImageItem) -> None:
            async with window:
                results[index] = await self._one(index, item, budget, fail_fast, thumbnails)

        await _in_task_group(one, images)
        return _all_done(results)

    async def _one(
        self, index: int, item: ImageItem, budget: RequestBudget, fail_fast: bool, thumbnail: bool
    ) -> Outcome:
        try:
            if isinstance(item, EmbeddedImage):
                data = item.data
                if data is None:  # refused or a copy: never sent here
                    raise ValueError(f"image {item.position} of a document has nothing to classify")
                if budget.over_time():
                    raise too_slow_image(budget.seconds)
            else:
                data = item
            decoded = await self.decode(data, budget, thumbnail)
        except InvalidImageError as exc:
            if fail_fast:
                raise exc.at(index) from None
            return exc.at(index)
        prediction = await self._classify(decoded.array, budget)
        return prediction if decoded.thumbnail is None else replace(prediction, thumbnail=decoded.thumbnail)


def _timed(budget: RequestBudget, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`work` in this worker thread, its CPU time charged to the request."""
    with budget.timed():
        return work(*args, **kwargs)


def _all_done(results: list[T | None]) -> list[T]:
    done = [result for result in results if result is not None]
    assert len(done) == len(results), "a task group ended with work left undone"
    return done


async def _in_task_group(
    work: Callable[[int, ImageItem], Coroutine[Any, Any, None]], images: Sequence[ImageItem]
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
