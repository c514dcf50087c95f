"""Backbone + head + softmax as one ONNX graph with a dynamic batch axis."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cats_dogs_other.models.card import Preprocessing
from cats_dogs_other.training.efficientnet_lite import EfficientNetLite0

OPSET = 18


class ServingModel(nn.Module):
    """What the service runs: raw uint8 pixels in, label probabilities out."""

    def __init__(self, normalizer: nn.Module, backbone: EfficientNetLite0, head: nn.Linear) -> None:
        super().__init__()
        self.normalizer = normalizer
        self.backbone = backbone
        self.head = head

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.backbone.features(self.normalizer(image))), dim=-1)


def export_onnx(model: ServingModel, path: Path, spec: Preprocessing) -> None:
    """Export with the torch.export-based exporter; spatial size is fixed by the card, batch is free."""
    example = torch.zeros((2, spec.height, spec.width, 3), dtype=torch.uint8)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["image"],
        output_names=["probabilities"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
