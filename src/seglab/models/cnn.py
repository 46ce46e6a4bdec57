"""The series' SegNet-style CNN (Matani & Singh, Parts 2 and 3) and its depthwise-separable variant.

Layer plan (the reading that gives the published parameter counts exactly):

    BatchNorm2d(3) on the raw image                                  (counted: 6 parameters)
    encoder  DownConv2(3->64)    DownConv2(64->128)  DownConv3(128->256)  DownConv3(256->512)
             k x [Conv3x3 (padding 1, no bias) -> BN -> ReLU], the FIRST conv changing the channels,
             then MaxPool2d(2, return_indices=True)
    decoder  UpConv3(512->256)   UpConv3(256->128)   UpConv2(128->64)     UpConv2(64->num_classes)
             MaxUnpool2d(2) with the matching encoder block's indices, then
             k x [Conv3x3 (no bias) -> BN -> ReLU], the LAST conv changing the channels

Every conv, the decoder's very last one included, is followed by BN and ReLU, and the input BN is counted:
15,274,892 parameters for num_classes=3 (dropping the final BN, or the input BN, gives 15,274,886).
Part 3 replaces every 3x3 conv by a depthwise 3x3 (groups=in, no bias) + pointwise 1x1 (no bias):
1,749,671 parameters.

`faithful=True` keeps the series' final ReLU, so its "logits" are never negative (cross-entropy still
trains, but a class can never score below 0). `faithful=False` gives a proper head instead: the last up
block's last conv goes to widths[0] (64) channels with BN and ReLU like the others, and a 1x1
Conv2d(64, num_classes, bias=True) classifier follows, as in SegNet proper; its logits are unbounded and
the bias carries the class priors. That costs 15,310,345 / 1,753,892 parameters (num_classes=3).
We prefer it to merely dropping the final BN+ReLU because that would leave a bias-free conv writing logits
(no per-class offset at all).

Any input size works: H and W are padded (bottom/right, replicating the edge, after the input BN so its
statistics see only real pixels) to a multiple of 2**len(widths) = 16 and the logits are cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from itertools import pairwise
from typing import Any

import torch
from torch import nn

from ..errors import SeglabError, check_known
from .layers import pad_to_multiple

@dataclass
class SegNetConfig:
    """The series' CNN: `widths` per encoder block (the decoder mirrors them), `depths` convs per block."""

    in_channels: int = 3
    num_classes: int = 3
    separable: bool = False  # Part 3: depthwise 3x3 + pointwise 1x1 instead of every 3x3 conv
    faithful: bool = True  # True: the series' final Conv-BN-ReLU; False: a 1x1 classifier head
    widths: tuple[int, ...] = (64, 128, 256, 512)
    depths: tuple[int, ...] = (2, 2, 3, 3)  # encoder blocks' conv counts; decoder block i uses depths[-1 - i]

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)  # a YAML config gives lists
        self.depths = tuple(int(d) for d in self.depths)
        if self.in_channels < 1 or self.num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be positive, not {self.in_channels}, "
                             f"{self.num_classes}")
        if not self.widths or any(w < 1 for w in self.widths):
            raise ValueError(f"widths must be positive channel counts, not {self.widths}")
        if len(self.depths) != len(self.widths) or any(d < 1 for d in self.depths):
            raise ValueError(f"depths {self.depths} must give one positive conv count per width {self.widths}")

    @property
    def multiple(self) -> int:
        """Inputs are padded to a multiple of this: each block halves the size once."""
        return 2 ** len(self.widths)


class DepthwiseSeparableConv(nn.Module):
    """Part 3's replacement for a 3x3 conv: depthwise 3x3 (one filter per channel) then pointwise 1x1, no biases."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class ConvBNReLU(nn.Sequential):
    """3x3 conv (padding 1, no bias: BN supplies the shift) -> BatchNorm2d -> ReLU; keeps H and W."""

    def __init__(self, in_channels: int, out_channels: int, separable: bool):
        conv: nn.Module
        if separable:
            conv = DepthwiseSeparableConv(in_channels, out_channels)
        else:
            conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        super().__init__(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class DownBlock(nn.Module):
    """The series' DownConv2/DownConv3: `depth` x ConvBNReLU (the first changes the channels), then a 2x2 max pool
    that keeps its indices for the matching UpBlock."""

    def __init__(self, in_channels: int, out_channels: int, depth: int, separable: bool):
        super().__init__()
        channels = [in_channels] + [out_channels] * depth
        self.convs = nn.Sequential(*(ConvBNReLU(a, b, separable) for a, b in pairwise(channels)))
        self.pool = nn.MaxPool2d(2, return_indices=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.convs(x)  # (B, out, H, W), H and W even (the input is padded to a multiple of 16)
        return self.pool(x)  # (B, out, H/2, W/2), indices alike


class MaxUnpool2x(nn.Module):
    """nn.MaxUnpool2d(2) without an output size: each value goes back to where its window's maximum was, in a map
    of twice the size, zeros elsewhere. Written as a scatter so that it traces and exports (ONNX ScatterElements)
    at any size; the same values and gradients as F.max_unpool2d."""

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        B, C, h, w = x.shape
        out = x.new_zeros(B, C, 4 * h * w)  # (B, C, 2h*2w)
        out = out.scatter(2, indices.flatten(2), x.flatten(2))  # indices: flat positions in the (2h, 2w) map
        return out.view(B, C, 2 * h, 2 * w)  # (B, C, 2h, 2w)


class UpBlock(nn.Module):
    """The series' UpConv3/UpConv2: 2x max unpool with the stored indices, then `depth` x ConvBNReLU, the LAST
    one changing the channels (the earlier ones keep the input's)."""

    def __init__(self, in_channels: int, out_channels: int, depth: int, separable: bool):
        super().__init__()
        self.unpool = MaxUnpool2x()
        channels = [in_channels] * depth + [out_channels]
        self.convs = nn.Sequential(*(ConvBNReLU(a, b, separable) for a, b in pairwise(channels)))

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        x = self.unpool(x, indices)  # (B, in, 2h, 2w): values back where the maxima were
        return self.convs(x)  # (B, out, 2h, 2w)


class SegNet(nn.Module):
    """The series' CNN: images (B, in, H, W) in [0, 1] -> logits (B, num_classes, H, W), for any H and W."""

    def __init__(self, config: SegNetConfig | None = None):
        super().__init__()
        self.config = config = config or SegNetConfig()
        widths, depths = config.widths, config.depths
        self.norm_in = nn.BatchNorm2d(config.in_channels)  # the series' normalisation: none outside the model
        ins = (config.in_channels, *widths[:-1])
        self.down = nn.ModuleList(
            DownBlock(a, b, d, config.separable) for a, b, d in zip(ins, widths, depths)
        )
        # The decoder mirrors the encoder: 512->256, 256->128, 128->64, then 64->classes (or 64->64 + head).
        last = config.num_classes if config.faithful else widths[0]
        outs = (*widths[-2::-1], last)
        self.up = nn.ModuleList(
            UpBlock(a, b, d, config.separable) for a, b, d in zip(widths[::-1], outs, depths[::-1])
        )
        self.head: nn.Module
        if config.faithful:
            self.head = nn.Identity()  # the last ConvBNReLU already gave num_classes (non-negative) channels
        else:
            self.head = nn.Conv2d(widths[0], config.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        x = self.norm_in(x)  # (B, in, H, W)
        # Always padded (by zero rows when H and W are multiples already): no branch on the shape, so a traced or
        # exported model serves every size.
        x = pad_to_multiple(x, self.config.multiple, mode="replicate")  # (B, in, H', W'), multiples of 16
        skips = []
        for block in self.down:
            x, indices = block(x)  # (B, w_i, H'/2^(i+1), W'/2^(i+1))
            skips.append(indices)
        for block, indices in zip(self.up, reversed(skips)):
            x = block(x, indices)  # (B, w_(i-1) or last, 2x the size)
        x = self.head(x)  # (B, num_classes, H', W')
        return x[..., :H, :W]  # (B, num_classes, H, W)


def build_segnet(num_classes: int = 3, image_size: int = 128, separable: bool = False, faithful: bool = True,
                 **overrides: Any) -> SegNet:
    """The registry's builder. image_size is accepted for the registry's uniform call and not needed: any input
    size works. Overrides may set in_channels, widths and depths."""
    allowed = {f.name for f in fields(SegNetConfig)} - {"num_classes", "separable", "faithful"}
    check_known(overrides, allowed, " for a SegNet")
    try:
        config = SegNetConfig(num_classes=num_classes, separable=separable, faithful=faithful, **overrides)
    except (TypeError, ValueError) as e:
        raise SeglabError(f"invalid SegNet options: {e}") from None
    return SegNet(config)


__all__ = ["SegNet", "SegNetConfig", "build_segnet"]
