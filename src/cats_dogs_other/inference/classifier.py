"""The inference engine: one ONNX Runtime session, loaded once, fed by the model card's preprocessing."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from cats_dogs_other.inference.decode import DEFAULT_MAX_PIXELS, InvalidImageError, decode_image
from cats_dogs_other.inference.preprocess import to_input_array
from cats_dogs_other.models.card import ModelCard, card_path_for, default_model_path


class ModelLoadError(RuntimeError):
    """The model cannot be served; the message says what to fix. Raised at start, never per request."""


@dataclass(frozen=True)
class Prediction:
    """The course's response shape: the winning label and one value per label, in label order."""

    prediction: str
    values: list[float]

    def as_dict(self) -> dict[str, object]:
        return {"prediction": self.prediction, "values": self.values}


def available_cores() -> int:
    """Cores this process may run on (respects taskset and container CPU sets), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ImageClassifier:
    """Decode, preprocess and classify images with an ONNX model and its card."""

    def __init__(
        self,
        session: ort.InferenceSession,
        card: ModelCard,
        model_path: Path,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self._session = session
        self.card = card
        self.model_path = model_path
        self.max_pixels = max_pixels
        self.sha256 = file_sha256(model_path)
        spec = card.preprocessing
        self._draft_size = (spec.width * 2, spec.height * 2)
        self._check_signature()

    @classmethod
    def load(
        cls,
        model_path: Path | None = None,
        *,
        card: ModelCard | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        threads: int | None = None,
    ) -> ImageClassifier:
        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.is_file():
            raise ModelLoadError(
                f"Model file not found: {path}. Pass --model with the path of an .onnx file."
            )
        if card is None:
            card_file = card_path_for(path)
            try:
                card = ModelCard.load(card_file) if card_file.is_file() else ModelCard()
            except ValueError as exc:
                raise ModelLoadError(f"Model card {card_file} is not valid: {exc}") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or available_cores()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle ORT threads would otherwise spin for a while, burning the cores decoding needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own untyped errors for every kind of bad file
            raise ModelLoadError(f"{path} is not a loadable ONNX model: {exc}") from exc
        return cls(session, card, path, max_pixels=max_pixels)

    def _check_signature(self) -> None:
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name: o for o in self._session.get_outputs()}
        if self.card.input_name not in inputs:
            raise ModelLoadError(
                f"The model has no input named {self.card.input_name!r} (it has {sorted(inputs)}); "
                "fix input_name in its model card."
            )
        if self.card.output_name not in outputs:
            raise ModelLoadError(
                f"The model has no output named {self.card.output_name!r} (it has {sorted(outputs)}); "
                "fix output_name in its model card."
            )
        width = outputs[self.card.output_name].shape[-1]
        if isinstance(width, int) and width != len(self.card.labels):
            raise ModelLoadError(
                f"The model has {width} outputs but its card names {len(self.card.labels)} labels "
                f"({', '.join(self.card.labels)}); a cats/dogs/other model needs one output per label."
            )

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def labels(self) -> list[str]:
        return self.card.labels

    def decode(self, data: bytes, max_pixels: int | None = None) -> np.ndarray:
        """Bytes to one model input (no batch axis). Raises InvalidImageError for bad input."""
        image = decode_image(data, max_pixels or self.max_pixels, self._draft_size)
        return to_input_array(image, self.card.preprocessing)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """A batch of model inputs to an (N, labels) array of output values."""
        (scores,) = self._session.run([self.card.output_name], {self.card.input_name: batch})
        return np.asarray(scores, dtype=np.float32)

    def to_prediction(self, scores: np.ndarray) -> Prediction:
        values = [float(v) for v in scores]
        return Prediction(prediction=self.labels[int(np.argmax(scores))], values=values)

    def predict(self, images: Sequence[bytes]) -> list[Prediction]:
        """Classify many encoded images in one model call; the first bad image raises InvalidImageError."""
        if not images:
            return []
        batch = np.stack([self.decode(data) for data in images])
        return [self.to_prediction(row) for row in self.run(batch)]

    def predict_each(self, images: Sequence[bytes]) -> list[Prediction | InvalidImageError]:
        """Like `predict`, but a bad image gets its error in its place and the others are still answered."""
        decoded: list[np.ndarray | InvalidImageError] = []
        for data in images:
            try:
                decoded.append(self.decode(data))
            except InvalidImageError as exc:
                decoded.append(exc)
        good = [d for d in decoded if isinstance(d, np.ndarray)]
        rows = iter(self.run(np.stack(good))) if good else iter(())
        return [d if isinstance(d, InvalidImageError) else self.to_prediction(next(rows)) for d in decoded]

    def warm_up(self) -> None:
        """One inference on a blank image, so the first real request does not pay for lazy initialisation."""
        spec = self.card.preprocessing
        blank = to_input_array(Image.new("RGB", (spec.width, spec.height), (127, 127, 127)), spec)
        self.run(blank[np.newaxis])
