"""The inference engine: one model runner (ONNX Runtime, OpenVINO or Keras), loaded once, fed by the model
card's preprocessing."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from cats_dogs_other.cpu import available_cores
from cats_dogs_other.inference.budget import RequestBudget
from cats_dogs_other.inference.decode import SOURCE_PIXELS_INFO, decode_image
from cats_dogs_other.inference.documents import PdfRaster
from cats_dogs_other.inference.limits import DEFAULT_MAX_PIXELS
from cats_dogs_other.inference.preprocess import thumbnail_jpeg, to_input_array, training_png
from cats_dogs_other.models.card import ModelCard
from cats_dogs_other.models.errors import ModelLoadError
from cats_dogs_other.models.runners import KerasRunner, ModelRunner, Runtime, onnx_runner
from cats_dogs_other.models.source import MlflowRegistry, ModelSource, resolve_model

__all__ = ["ImageClassifier", "ModelInput", "ModelLoadError", "Prediction"]


@dataclass(frozen=True)
class Prediction:
    """The course's response shape: the winning label and one value per label, in label order."""

    prediction: str
    values: list[float]
    # The image as the model saw it, small, as JPEG; only when the caller asked (a page shows it).
    thumbnail: bytes | None = None

    def as_dict(self) -> dict[str, object]:
        return {"prediction": self.prediction, "values": self.values}


@dataclass(frozen=True)
class ModelInput:
    """One decoded image, ready for the model, and what the service reports about it."""

    array: np.ndarray  # the model's input, without the batch axis
    source_pixels: int  # width x height of the image as sent, before any reduction
    thumbnail: bytes | None = None  # a small JPEG of what the model sees, when asked for


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ImageClassifier:
    """Decode, preprocess and classify images with a model runner (ONNX or Keras) and its card."""

    def __init__(
        self, runner: ModelRunner, card: ModelCard, model_path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> None:
        self._runner = runner
        self.card = card
        self.model_path = model_path
        self.max_pixels = max_pixels
        self.sha256 = file_sha256(model_path)
        spec = card.preprocessing
        # Decode no smaller than twice the model input: the antialiased resize then sees enough pixels.
        self.min_side = 2 * max(spec.width, spec.height)
        width = runner.output_width()
        if width is not None and width != len(card.labels):
            raise ModelLoadError(
                f"The model has {width} outputs but its card names {len(card.labels)} labels "
                f"({', '.join(card.labels)}); a cats/dogs/other model needs one output per label."
            )

    @classmethod
    def load(
        cls,
        model: str | Path | None = None,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        threads: int | None = None,
        card: ModelCard | None = None,
        registry: MlflowRegistry | None = None,
        threads_per_call: int = 1,
        runtime: Runtime | Literal["auto"] = "auto",
    ) -> ImageClassifier:
        """A model by path or URI (default: the built-in model); see `models.source`."""
        source = resolve_model(model, registry=registry)
        return cls.from_source(
            source,
            card=card,
            max_pixels=max_pixels,
            threads=threads,
            threads_per_call=threads_per_call,
            runtime=runtime,
        )

    @classmethod
    def from_source(
        cls,
        source: ModelSource,
        *,
        card: ModelCard | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        threads: int | None = None,
        threads_per_call: int = 1,
        runtime: Runtime | Literal["auto"] = "auto",
    ) -> ImageClassifier:
        """An already resolved model: its runner by kind, its card (given, shipped, or the kind's default).
        `threads` for inference in all; an ONNX model runs `threads // threads_per_call` calls at once, on
        `runtime` ("auto": the fastest installed)."""
        threads = threads or available_cores()
        runner: ModelRunner
        if source.kind == "keras":
            if runtime != "auto":
                raise ModelLoadError(
                    f"INFERENCE_RUNTIME={runtime} runs ONNX models; {source.path.name} is a Keras file, run "
                    "by Keras. Convert it once to run it on that runtime: "
                    "cats-dogs-other convert MODEL --out DIR, then serve DIR/model.onnx."
                )
            keras_runner = KerasRunner(source.path, threads)
            card = card or source.card or keras_runner.course_card(source.path.stem)
            runner = keras_runner
        else:
            card = card or source.card or ModelCard()
            runner = onnx_runner(runtime, source.path, card, threads, threads_per_call)
        return cls(runner, card, source.path, max_pixels=max_pixels)

    @property
    def runtime(self) -> str:
        """What runs the model: onnxruntime, openvino or keras."""
        return self._runner.runtime

    @property
    def parallel_calls(self) -> int:
        """Model calls that may run at once (`ModelRunner.parallel_calls`)."""
        return self._runner.parallel_calls

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def labels(self) -> list[str]:
        return self.card.labels

    def decode(
        self, data: bytes | PdfRaster, max_pixels: int | None = None, budget: RequestBudget | None = None
    ) -> np.ndarray:
        """An encoded image (or a document's image) to one model input (no batch axis).
        Raises InvalidImageError for bad input."""
        return self.prepare(data, max_pixels, budget).array

    def prepare(
        self,
        data: bytes | PdfRaster,
        max_pixels: int | None = None,
        budget: RequestBudget | None = None,
        *,
        thumbnail: bool = False,
    ) -> ModelInput:
        """`decode`, with the image's size as sent and, if asked, a small JPEG of the same upright
        image (made from the reduced decode)."""
        image = self._decoded(data, max_pixels, budget)
        return ModelInput(
            to_input_array(image, self.card.preprocessing),
            int(image.info.get(SOURCE_PIXELS_INFO, image.width * image.height)),
            thumbnail_jpeg(image) if thumbnail else None,
        )

    def training_image(
        self, data: bytes | PdfRaster, max_pixels: int | None = None, budget: RequestBudget | None = None
    ) -> tuple[bytes, int, int]:
        """The image as stored for retraining (`preprocess.training_png`), from the same reduced decode
        the model's input comes from: the same limits, the same memory budget."""
        return training_png(self._decoded(data, max_pixels, budget))

    def _decoded(
        self, data: bytes | PdfRaster, max_pixels: int | None, budget: RequestBudget | None
    ) -> Image.Image:
        if isinstance(data, PdfRaster):  # its pixel count was checked when the document was read
            return data.decode(self.min_side, budget)
        return decode_image(data, max_pixels or self.max_pixels, self.min_side, budget)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """A batch of model inputs to an (N, labels) array of output values."""
        return self._runner.run(batch)

    def to_prediction(self, scores: np.ndarray) -> Prediction:
        values = [float(v) for v in scores]
        return Prediction(prediction=self.labels[int(np.argmax(scores))], values=values)

    def predict(self, images: Sequence[bytes]) -> list[Prediction]:
        """Classify many encoded images in one model call; the first bad image raises InvalidImageError."""
        if not images:
            return []
        batch = np.stack([self.decode(data) for data in images])
        return [self.to_prediction(row) for row in self.run(batch)]

    def warm_up(self, batch_size: int = 1) -> None:
        """Inference on blank images at the largest batch size, so that neither the first request nor the
        first full batch pays for lazy initialisation or for growing ONNX Runtime's memory arena."""
        spec = self.card.preprocessing
        blank = to_input_array(Image.new("RGB", (spec.width, spec.height), (127, 127, 127)), spec)
        self.run(np.stack([blank] * max(1, batch_size)))
