"""How good a model is on labelled images, and how it holds up when the same images come in worse:
the numbers a person (and, next, a promotion gate) compares two models by.

Every variant is re-encoded and sent through the service's own decoding (`ImageClassifier.predict`),
so what is measured is what a client's upload would get, EXIF rotation included. Needs no training
stack (no torch): `evaluate` runs wherever the service does.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.inference.decode import ORIENTATION_TAG, decode_image
from cats_dogs_other.inference.documents import PdfRaster
from cats_dogs_other.models.source import MlflowRegistry
from cats_dogs_other.training.dataset import LabelledImage

ROTATED_90 = 6  # EXIF: "rotate 90° clockwise to display", what a phone held upright writes
THUMBNAIL_SIDE = 96
CALIBRATION_BINS = 10


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _jpeg(image: Image.Image, quality: int, exif: Image.Exif | None = None) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, **({"exif": exif} if exif is not None else {}))
    return out.getvalue()


def _exif_rotated(image: Image.Image) -> bytes:
    """The pixels stored turned a quarter to the left with orientation 6: upright only to a decoder
    that honours EXIF, as a phone's photo is."""
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = ROTATED_90
    return _jpeg(image.transpose(Image.Transpose.ROTATE_90), 95, exif)


def _thumbnail(image: Image.Image) -> bytes:
    small = image.copy()
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR)
    return _png(small)


# Each takes the upright RGB image and returns the file a client would send.
VARIANTS: dict[str, Callable[[Image.Image], bytes]] = {
    "colour": _png,
    "grayscale": lambda image: _png(image.convert("L")),
    "jpeg_quality_30": lambda image: _jpeg(image, 30),
    "thumbnail_96px": _thumbnail,
    "exif_rotated": _exif_rotated,
    "mirrored": lambda image: _png(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
    "brighter": lambda image: _png(ImageEnhance.Brightness(image).enhance(1.4)),
}


def upright(data: bytes | PdfRaster) -> Image.Image:
    """The image as the service sees it before resizing: decoded, upright, RGB."""
    return data.decode() if isinstance(data, PdfRaster) else decode_image(data)


def confusion(true: np.ndarray, pred: np.ndarray, classes: int) -> np.ndarray:
    matrix = np.zeros((classes, classes), dtype=int)
    np.add.at(matrix, (true, pred), 1)
    return matrix


def metrics_from_confusion(matrix: np.ndarray, labels: list[str]) -> dict[str, object]:
    per_class = {}
    for i, label in enumerate(labels):
        tp = int(matrix[i, i])
        predicted = int(matrix[:, i].sum())
        actual = int(matrix[i].sum())
        per_class[label] = {
            "precision": round(tp / predicted, 4) if predicted else None,
            "recall": round(tp / actual, 4) if actual else None,
            "support": actual,
        }
    return {
        "accuracy": round(float(np.trace(matrix) / matrix.sum()), 4),
        "confusion_matrix": {"rows_true_columns_predicted": labels, "matrix": matrix.tolist()},
        "per_class": per_class,
    }


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS
) -> float:
    """How far the top value is from the share of answers it gets right: the gap between mean
    confidence and accuracy in each of `bins` equal-width confidence bins, weighted by the bin's share."""
    if len(confidence) == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap += inside.mean() * abs(float(confidence[inside].mean()) - float(correct[inside].mean()))
    return gap


@dataclass(frozen=True)
class VariantResult:
    """One model on one variant of the evaluation set."""

    metrics: dict[str, object]
    expected_calibration_error: float
    unsure_share: float

    @property
    def accuracy(self) -> float:
        return float(self.metrics["accuracy"])  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, object]:
        return {
            **self.metrics,
            "expected_calibration_error": round(self.expected_calibration_error, 4),
            "unsure_share": round(self.unsure_share, 4),
        }


def evaluate(
    classifier: ImageClassifier,
    items: Sequence[LabelledImage],
    *,
    unsure_below: float,
    variants: Sequence[str] = tuple(VARIANTS),
    batch_size: int = 16,
) -> dict[str, VariantResult]:
    """The model's results on `items`, once per variant, each image sent as a client would send it."""
    labels = classifier.labels
    pictures = [upright(item.data) for item in items]
    truth = np.array([item.label_index for item in items])
    results = {}
    for name in variants:
        make = VARIANTS[name]
        values: list[list[float]] = []
        for start in range(0, len(pictures), batch_size):
            files = [make(picture) for picture in pictures[start : start + batch_size]]
            values.extend(p.values for p in classifier.predict(files))
        scores = np.array(values)
        predicted = scores.argmax(axis=1)
        confidence = scores.max(axis=1)
        results[name] = VariantResult(
            metrics_from_confusion(confusion(truth, predicted, len(labels)), labels),
            expected_calibration_error(confidence, (predicted == truth).astype(float)),
            float((confidence < unsure_below).mean()),
        )
    return results


@dataclass(frozen=True)
class Evaluated:
    """One model's part of a report: what it is, whether it was trained without the evaluation set,
    and its results per variant."""

    reference: str
    kept_out: bool | None  # None: evaluated on every image given, no split
    results: dict[str, VariantResult]


def report(
    models: dict[str, Evaluated],
    *,
    images: int,
    data: list[str],
    unsure_below: float,
    split: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON report: per model (its role, e.g. candidate or champion), its reference and sha256,
    whether it saw the evaluation images in training, and per variant the metrics."""
    return {
        "images": images,
        "data": data,
        "split": split,
        "unsure_below": unsure_below,
        "models": {
            role: {
                "model": model.reference,
                "trained_without_these_images": model.kept_out,
                "variants": {n: r.as_dict() for n, r in model.results.items()},
            }
            for role, model in models.items()
        },
    }


def markdown(report_json: dict[str, Any]) -> str:
    """The same report for a person: one table per model, and the differences when there are two."""
    lines = [f"# Evaluation on {report_json['images']} images ({', '.join(report_json['data'])})", ""]
    split = report_json.get("split")
    if split:
        lines += [
            f"The source documents held out of training ({100 * split['share']:g}% by a hash of their "
            f"name, salt `{split['salt']}`): {split['groups']} documents.",
            "",
        ]
    models = report_json["models"]
    for role, model in models.items():
        lines += [f"## {role}: `{model['model']}`", ""]
        if split and model.get("trained_without_these_images") is False:
            lines += ["Its card does not say it was trained without these images: they may flatter it.", ""]
        labels = next(iter(model["variants"].values()))["confusion_matrix"]["rows_true_columns_predicted"]
        lines.append(
            "| variant | accuracy | " + " | ".join(f"{lb} recall" for lb in labels) + " | ECE | unsure |"
        )
        lines.append("|---|---:|" + "---:|" * len(labels) + "---:|---:|")
        for name, v in model["variants"].items():
            recalls = " | ".join(_number(v["per_class"][lb]["recall"]) for lb in labels)
            lines.append(
                f"| {name} | {v['accuracy']:.4f} | {recalls} | {v['expected_calibration_error']:.4f} | "
                f"{v['unsure_share']:.4f} |"
            )
        colour = model["variants"].get("colour")
        if colour is not None:
            matrix = colour["confusion_matrix"]["matrix"]
            lines += ["", "Confusion matrix, colour (rows: true label, columns: answer):", ""]
            lines.append("| | " + " | ".join(labels) + " |")
            lines.append("|---|" + "---:|" * len(labels))
            lines += [
                f"| {lb} | " + " | ".join(map(str, row)) + " |"
                for lb, row in zip(labels, matrix, strict=True)
            ]
        lines.append("")
    if len(models) == 2:
        (first, a), (second, b) = models.items()
        lines += [f"## {first} against {second} (accuracy, points)", ""]
        lines += ["| variant | " + first + " | " + second + " | difference |", "|---|---:|---:|---:|"]
        for name in a["variants"]:
            if name in b["variants"]:
                x, y = a["variants"][name]["accuracy"], b["variants"][name]["accuracy"]
                lines.append(f"| {name} | {100 * x:.1f} | {100 * y:.1f} | {100 * (x - y):+.1f} |")
        lines.append("")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def write_report(report_json: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """`evaluation.json` and `evaluation.md` in the folder `out`."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "evaluation.json", out / "evaluation.md"
    json_path.write_text(json.dumps(report_json, indent=2) + "\n")
    md_path.write_text(markdown(report_json))
    return json_path, md_path


def log_to_run(
    run_id: str, report_json: dict[str, Any], files: Sequence[Path], registry: MlflowRegistry
) -> None:
    """The candidate's results on its own MLflow run (the run that logged the model): a metric per
    variant and measure (`evaluation_<variant>_accuracy`, `_ece`, `_unsure`), and the reports as
    artifacts under `evaluation/`, so the registry shows how a version was judged."""
    from mlflow import MlflowClient

    with registry.client_environment():
        client = MlflowClient(registry.tracking_uri)
        for variant, numbers in report_json["models"]["candidate"]["variants"].items():
            client.log_metric(run_id, f"evaluation_{variant}_accuracy", numbers["accuracy"])
            client.log_metric(run_id, f"evaluation_{variant}_ece", numbers["expected_calibration_error"])
            client.log_metric(run_id, f"evaluation_{variant}_unsure", numbers["unsure_share"])
        for path in files:
            client.log_artifact(run_id, str(path), artifact_path="evaluation")
