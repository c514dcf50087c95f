"""ONNX export: the backbone as its own graph (optionally quantised to int8), then the head appended.

Features for training come from the very graph that will be served, so a quantised model's head is
fitted, and validated, on quantised features.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from cats_dogs_other.models.card import Preprocessing
from cats_dogs_other.training.efficientnet_lite import EfficientNetLite0

OPSET = 18
FEATURES = "features"


class FeatureModel(nn.Module):
    """Raw uint8 NHWC pixels in, pooled backbone features out: the part of the graph that is frozen."""

    def __init__(self, normalizer: nn.Module, backbone: EfficientNetLite0) -> None:
        super().__init__()
        self.normalizer = normalizer
        self.backbone = backbone

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(self.normalizer(image))


class ServingModel(nn.Module):
    """The whole served model in PyTorch: the reference the ONNX export is checked against."""

    def __init__(self, features: FeatureModel, head: nn.Linear) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.features(image)), dim=-1)


def export_features(model: FeatureModel, path: Path, spec: Preprocessing) -> None:
    """Export with the torch.export-based exporter; spatial size is fixed by the card, batch is free."""
    example = torch.zeros((2, spec.height, spec.width, 3), dtype=torch.uint8)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["image"],
        output_names=[FEATURES],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
        verbose=False,
    )


def quantize_int8(source: Path, target: Path, calibration: np.ndarray) -> None:
    """Static int8 quantisation (QDQ, per-channel weights), calibrated on real training images.

    Static rather than dynamic: ONNX Runtime's dynamic quantisation turns convolutions into ConvInteger,
    which runs far slower on CPU (BENCHMARKS.md, *Quantisation*).
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Images(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = iter(
                np.array_split(calibration, max(1, len(calibration) // 8))
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {"image": batch}

    prepared = target.with_suffix(".pre.onnx")
    quant_pre_process(str(source), str(prepared))
    quantize_static(
        str(prepared),
        str(target),
        Images(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    prepared.unlink()


def append_head(features_graph: Path, head: nn.Linear, target: Path) -> None:
    """The served graph: the backbone graph, then Gemm (the trained head) and Softmax -> `probabilities`."""
    model = onnx.load(str(features_graph))
    graph = model.graph
    weight = head.weight.detach().numpy().astype(np.float32)
    bias = head.bias.detach().numpy().astype(np.float32)
    graph.initializer.extend(
        [numpy_helper.from_array(weight, "head_weight"), numpy_helper.from_array(bias, "head_bias")]
    )
    graph.node.extend(
        [
            helper.make_node(
                "Gemm", [FEATURES, "head_weight", "head_bias"], ["logits"], transB=1, name="head"
            ),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1, name="softmax"),
        ]
    )
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", weight.shape[0]])
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
