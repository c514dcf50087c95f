"""The async face of the engine: decoding and inference run in worker threads, never on the event loop.

Decoding (Pillow releases the GIL) runs on as many threads as there are cores, so one request's decode
overlaps another's inference; the model runs one call at a time, because ONNX Runtime already spreads a
call over every core and two concurrent calls would only fight for them.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import numpy as np

from cats_dogs_other.inference.classifier import ImageClassifier, Prediction, available_cores
from cats_dogs_other.inference.decode import InvalidImageError


class InferenceService:
    def __init__(self, classifier: ImageClassifier, max_pixels: int | None = None) -> None:
        self.classifier = classifier
        self.max_pixels = max_pixels or classifier.max_pixels
        self._decoders = anyio.CapacityLimiter(available_cores())
        self._model = anyio.CapacityLimiter(1)

    async def decode(self, data: bytes) -> np.ndarray:
        return await anyio.to_thread.run_sync(
            self.classifier.decode, data, self.max_pixels, limiter=self._decoders
        )

    async def run(self, batch: np.ndarray) -> np.ndarray:
        return await anyio.to_thread.run_sync(self.classifier.run, batch, limiter=self._model)

    async def predict(self, data: bytes) -> Prediction:
        """One encoded image to its prediction; raises InvalidImageError for bad input."""
        (scores,) = await self.run((await self.decode(data))[np.newaxis])
        return self.classifier.to_prediction(scores)

    async def predict_each(self, images: Sequence[bytes]) -> list[Prediction | InvalidImageError]:
        """Many images in one model call; a bad image gets its error in its place."""
        decoded: list[np.ndarray | InvalidImageError] = [None] * len(images)  # type: ignore[list-item]

        async def decode_into(index: int, data: bytes) -> None:
            try:
                decoded[index] = await self.decode(data)
            except InvalidImageError as exc:
                decoded[index] = exc

        async with anyio.create_task_group() as group:
            for index, data in enumerate(images):
                group.start_soon(decode_into, index, data)
        good = [d for d in decoded if isinstance(d, np.ndarray)]
        rows = iter(await self.run(np.stack(good))) if good else iter(())
        return [
            d if isinstance(d, InvalidImageError) else self.classifier.to_prediction(next(rows))
            for d in decoded
        ]
