"""The model card (`model.json` beside `model.onnx`): everything needed to feed and trust a model file.

Serving reads `labels`, `input` and `output`; people read the rest (where it came from, how well it did).
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_LABELS = ("Cat", "Dog", "Other")


class Preprocessing(BaseModel):
    """How decoded RGB pixels become the model's input tensor; whatever is not here lives in the graph."""

    model_config = ConfigDict(extra="forbid")

    height: int = Field(224, gt=0)
    width: int = Field(224, gt=0)
    resample: Literal["bilinear", "nearest", "bicubic"] = "bilinear"
    layout: Literal["NHWC", "NCHW"] = "NHWC"
    dtype: Literal["uint8", "float32"] = "uint8"
    mean: tuple[float, float, float] | None = Field(
        None, description="Subtracted per RGB channel from 0-255 values, outside the graph."
    )
    std: tuple[float, float, float] | None = Field(
        None, description="Divides per RGB channel after `mean`, outside the graph."
    )
    in_graph: str | None = Field(None, description="What the graph itself does to its input, for readers.")


class ModelCard(BaseModel):
    """Metadata of one served model. Unknown keys are kept so newer cards still load."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    name: str = "cats-dogs-other"
    format: Literal["onnx"] = "onnx"
    labels: list[str] = Field(default_factory=lambda: list(DEFAULT_LABELS))
    input_name: str = "image"
    output_name: str = "probabilities"
    outputs_are_probabilities: bool = True
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)

    def training_mix(self) -> dict[str, float]:
        """Each label's share of the training images (`training.images_per_label`, which `train`
        records); empty when the card does not say, as for a Keras file served without a card."""
        counts = self.training.get("images_per_label")
        if not isinstance(counts, dict):
            return {}
        numbers = {label: counts.get(label, 0) for label in self.labels}
        if not all(isinstance(n, int | float) and n >= 0 for n in numbers.values()):
            return {}
        total = sum(numbers.values())
        return {label: n / total for label, n in numbers.items()} if total > 0 else {}

    def validation_accuracy(self) -> float | None:
        """The accuracy on images the model never saw a document of, when the card records it:
        `metrics.pdf_grouped` (every image, `train` with a hold-out), else `metrics.validation`."""
        validation = self.metrics.get("pdf_grouped", self.metrics.get("validation"))
        accuracy = validation.get("accuracy") if isinstance(validation, dict) else None
        return float(accuracy) if isinstance(accuracy, int | float) and 0 <= accuracy <= 1 else None

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")


def card_path_for(model_path: Path) -> Path:
    """`model.json` beside `model.onnx` (or `<stem>.json` beside `<stem>.onnx`)."""
    beside = model_path.with_suffix(".json")
    return beside if beside.exists() else model_path.parent / "model.json"


def default_model_path() -> Path:
    """The model shipped inside the package, trained by `make train` on the course's dataset."""
    return Path(str(files("cats_dogs_other").joinpath("models/default/model.onnx")))
