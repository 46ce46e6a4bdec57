"""Decoders for multi-scale encoders: LR-ASPP, FPN and U-Net, and the encoder-decoder segmentation model.

Every model here takes images (B, 3, H, W) in [0, 1] of any size: they are padded at the bottom/right by
(-H) % 32 and (-W) % 32 (always, even by zero, so there is no shape-dependent branch and an ONNX export stays
valid for every size), run, and the logits are cropped back to (B, classes, H, W).

- LR-ASPP (Howard et al. 2019, "Searching for MobileNetV3"): on the deepest features, a 1x1 conv-BN-ReLU branch
  gated by a global-average-pool -> 1x1 conv -> sigmoid branch; upsampled to stride 8, classified, and added to a
  1x1 classifier of the stride-8 features. Without a dilated last stage the deep branch runs at stride 32.
- FPN (Lin et al. 2017) with the Panoptic-FPN / smp semantic head: 1x1 laterals, top-down nearest upsampling and
  addition, then each level 3x3 conv-BN-ReLU'd and upsampled to stride 4, summed, classified.
- U-Net (Ronneberger et al. 2015) on the encoder's features: upsample x2, concatenate the skip, two 3x3
  conv-BN-ReLU; down to stride 4, then two skip-less upsampling blocks to full resolution.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import pad_to_multiple

PAD_MULTIPLE = 32
HEADS = ("lraspp", "fpn", "unet")


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _up(x: torch.Tensor, size: Sequence[int] | torch.Size, mode: str = "bilinear") -> torch.Tensor:
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


class LRASPPHead(nn.Module):
    """LR-ASPP: features (strides 4..32) -> logits (B, classes, H/8, W/8)."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, inter_channels: int = 128):
        super().__init__()
        low, high = in_channels[1], in_channels[-1]  # stride 8 and the deepest
        self.cbr = _conv_bn_relu(high, inter_channels, kernel=1)
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(high, inter_channels, 1, bias=False),
                                   nn.Sigmoid())
        self.low_classifier = nn.Conv2d(low, num_classes, 1)
        self.classifier = nn.Conv2d(inter_channels, num_classes, 1)  # the high branch's classifier

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        low, high = features[1], features[-1]  # (B, C8, H/8, W/8), (B, C32, H/32, W/32)
        x = self.cbr(high) * self.scale(high)  # (B, inter, H/32, W/32)
        x = _up(x, low.shape[-2:])  # (B, inter, H/8, W/8)
        return self.low_classifier(low) + self.classifier(x)  # (B, classes, H/8, W/8)


class FPNHead(nn.Module):
    """FPN with a semantic head: features (strides 4..32) -> logits (B, classes, H/4, W/4)."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, pyramid_channels: int = 64,
                 segmentation_channels: int = 64, dropout: float = 0.1):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, pyramid_channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(_conv_bn_relu(pyramid_channels, segmentation_channels) for _ in in_channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(segmentation_channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        p = self.lateral[-1](features[-1])  # (B, P, H/32, W/32)
        pyramid = [p]
        for i in range(len(features) - 2, -1, -1):  # top-down: stride 16, 8, 4
            p = self.lateral[i](features[i]) + _up(p, features[i].shape[-2:], "nearest")
            pyramid.insert(0, p)  # pyramid[i]: (B, P, H/2^(i+2), W/2^(i+2))
        size = features[0].shape[-2:]
        x = sum(_up(smooth(q), size) for smooth, q in zip(self.smooth, pyramid))  # (B, S, H/4, W/4)
        return self.classifier(self.dropout(x))  # (B, classes, H/4, W/4)


class _UpBlock(nn.Module):
    """Upsample x2 (to the skip's size), concatenate the skip (if any), two 3x3 conv-BN-ReLU."""

    def __init__(self, cin: int, skip: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(_conv_bn_relu(cin + skip, cout), _conv_bn_relu(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is None:
            x = _up(x, (x.shape[-2] * 2, x.shape[-1] * 2), "nearest")
        else:
            x = torch.cat([_up(x, skip.shape[-2:], "nearest"), skip], dim=1)
        return self.conv(x)


class UNetHead(nn.Module):
    """U-Net decoder: features (strides 4..32) -> logits (B, classes, H, W)."""

    def __init__(self, in_channels: Sequence[int], num_classes: int,
                 decoder_channels: Sequence[int] = (128, 64, 32, 16, 16)):
        super().__init__()
        c4, c8, c16, c32 = in_channels
        d = decoder_channels
        self.blocks = nn.ModuleList([
            _UpBlock(c32, c16, d[0]),  # -> stride 16
            _UpBlock(d[0], c8, d[1]),  # -> stride 8
            _UpBlock(d[1], c4, d[2]),  # -> stride 4
            _UpBlock(d[2], 0, d[3]),  # -> stride 2
            _UpBlock(d[3], 0, d[4]),  # -> stride 1
        ])
        self.classifier = nn.Conv2d(d[4], num_classes, 3, padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]  # (B, C32, H/32, W/32)
        for block, skip in zip(self.blocks, [features[2], features[1], features[0], None, None]):
            x = block(x, skip)
        return self.classifier(x)  # (B, classes, H, W)


class EncoderDecoder(nn.Module):
    """A segmentation model from an encoder with `forward_features` and a head: images in [0, 1], any size.

    input_scale: the encoder sees the image resized by this factor (the head's logits are resized back).
    An integer scale pads the image to a multiple of 32 and then upsamples it (a multiple of 32 stays one);
    any other scale (e.g. 240 / 128 = 1.875) resizes the image first and pads the result to a multiple of 32,
    and the logits of the padding are cropped off before resizing back. Either way the padding and the resize
    follow the input's shape with no Python branch on it: a traced or exported graph serves every size.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, num_classes: int, input_scale: float = 1):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.num_classes = num_classes
        self.input_scale = input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        if float(self.input_scale).is_integer():  # a fixed option, not the input's shape
            return self._forward_integer_scale(x)[..., :H, :W]
        z = F.interpolate(x, scale_factor=self.input_scale, mode="bilinear", align_corners=False)  # (B, 3, h, w)
        zp = pad_to_multiple(z, PAD_MULTIPLE, value=0.5)  # (B, 3, hp, wp), grey = 0 after norm
        logits = self.head(self.encoder.forward_features(zp))  # (B, classes, hp/stride, wp/stride)
        logits = _up(logits, zp.shape[-2:])[..., :z.shape[-2], :z.shape[-1]]  # (B, classes, h, w)
        return _up(logits, (H, W))  # (B, classes, H, W)

    def _forward_integer_scale(self, x: torch.Tensor) -> torch.Tensor:
        # Always pad (by 0 when already a multiple): no Python branch on the size, so traced graphs stay general.
        x = pad_to_multiple(x, PAD_MULTIPLE, value=0.5)  # (B, 3, Hp, Wp), grey = 0 after norm
        z = x
        if self.input_scale != 1:  # the ImageNet encoder sees larger objects
            z = F.interpolate(x, scale_factor=self.input_scale, mode="bilinear", align_corners=False)
        logits = self.head(self.encoder.forward_features(z))  # (B, classes, s*Hp/stride, s*Wp/stride)
        return _up(logits, x.shape[-2:])  # (B, classes, Hp, Wp)

    @torch.no_grad()
    def reset_classifier(self) -> None:
        """Re-initialise the head's final classifier(s) (e.g. after loading weights trained for other classes)."""
        _reset_classifiers(self.head)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The encoder's parameters (the pretrained part, for a lower learning rate or freezing)."""
        return list(self.encoder.parameters())


def build_head(kind: str, in_channels: Sequence[int], num_classes: int) -> nn.Module:
    """One of HEADS for an encoder with the given feature channels (strides 4, 8, 16, 32), freshly initialised."""
    heads = {"lraspp": LRASPPHead, "fpn": FPNHead, "unet": UNetHead}
    if kind not in heads:
        raise ValueError(f"unknown head {kind!r}; choose one of {HEADS}")
    head = heads[kind](in_channels, num_classes)
    head.apply(_init_head)
    _reset_classifiers(head)
    return head


def _reset_classifiers(head: nn.Module) -> None:
    """Small-normal logits layers (std 0.01, zero bias): He-initialised ones start with a loss in the tens."""
    for conv in (head.classifier, getattr(head, "low_classifier", None)):
        if conv is not None:
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)


def _init_head(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def resolve_input_scale(input_scale: int | str, image_size: int, native_resolution: int) -> float:
    """The factor the encoder's input is resized by: 1, 2, 3 or 4 as given, or "auto": native_resolution /
    image_size (the encoder sees an image of the model's image_size at the resolution its ImageNet weights were
    trained at, e.g. 240 / 128 = 1.875 for Lite1 at 128; an integer when it divides evenly)."""
    if input_scale == "auto":
        scale = native_resolution / image_size
        return int(scale) if scale.is_integer() else scale
    if isinstance(input_scale, bool) or input_scale not in (1, 2, 3, 4):
        raise ValueError(f"input_scale must be 1, 2, 3, 4 or 'auto' (native resolution / image_size), "
                         f"not {input_scale!r}")
    return int(input_scale)


def build_efficientnet_model(head: str, num_classes: int = 3, image_size: int = 128,
                             encoder_weights: str | os.PathLike[str] | None = None,
                             input_scale: int | str = 1, variant: str = "lite0") -> EncoderDecoder:
    """EfficientNet-Lite (variant "lite0", "lite1" or "lite2") + a head ("lraspp", "fpn", "unet").

    encoder_weights: None (random), "imagenet" (the variant's ImageNet weights), "hf:owner/repo[/file][@rev]" or
    a path (efficientnet_pytorch or seglab names). image_size: any input size works; it sets the scale of
    input_scale="auto" and is recorded. input_scale: the encoder runs on the image resized this many times, 1-4,
    or "auto" for native_resolution / image_size (the variant's ImageNet resolution: 224, 240, 260); 2 on
    128-pixel inputs costs ~4x the compute."""
    from .encoders import EfficientNetLite, lite_config
    from .weights import load_efficientnet_weights

    config = lite_config(variant)
    scale = resolve_input_scale(input_scale, image_size, config.native_resolution)
    encoder = EfficientNetLite(config)
    if encoder_weights is not None and not encoder.stem.conv.weight.is_meta:  # TrainConfig.validate builds on meta
        load_efficientnet_weights(encoder, encoder_weights)
    return EncoderDecoder(encoder, build_head(head, encoder.feature_channels, num_classes), num_classes, scale)


__all__ = ["HEADS", "EncoderDecoder", "FPNHead", "LRASPPHead", "UNetHead", "build_efficientnet_model", "build_head",
           "resolve_input_scale"]
