"""Batched augmentations on the training device: image and mask flipped together, colour jitter on images.

The article applies RandomHorizontalFlip(0.5) to image and trimap together and ColorJitter(contrast=0.3) to
the image, per sample on the CPU; here the same transforms run on a whole uint8 batch at once on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights, so contrast matches ColorJitter


@dataclass
class AugmentConfig:
    hflip: float = 0.5  # probability of a horizontal flip of image and mask
    brightness: float = 0.0  # factor drawn from [1 - b, 1 + b], as ColorJitter
    contrast: float = 0.3  # factor drawn from [1 - c, 1 + c], blended with the image's mean gray
    saturation: float = 0.0  # factor drawn from [1 - s, 1 + s], blended with the image's grayscale


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float (B, 3, H, W) in [0, 1]."""
    return images.float().div_(255.0)


def _factors(n: int, amount: float, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    lo = max(0.0, 1.0 - amount)
    u = torch.rand(n, 1, 1, 1, device=device, generator=generator)
    return lo + u * (1.0 + amount - lo)  # (B, 1, 1, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)  # (B, 1, H, W)


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    config: AugmentConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch on its device: uint8 images (B, 3, H, W) and masks (B, H, W) ->
    float images in [0, 1] and int64 masks. Random draws come from `generator` (on the batch's device)."""
    B = images.shape[0]
    device = images.device
    x = to_float(images)  # (B, 3, H, W)
    y = masks.long()  # (B, H, W)
    if config.hflip > 0:
        flip = torch.rand(B, device=device, generator=generator) < config.hflip  # (B,)
        x = torch.where(flip.view(B, 1, 1, 1), x.flip(-1), x)
        y = torch.where(flip.view(B, 1, 1), y.flip(-1), y)
    if config.brightness > 0:
        x = (x * _factors(B, config.brightness, device, generator)).clamp_(0.0, 1.0)
    if config.contrast > 0:
        f = _factors(B, config.contrast, device, generator)
        mean = _gray(x).mean(dim=(-2, -1), keepdim=True)  # (B, 1, 1, 1)
        x = (f * x + (1.0 - f) * mean).clamp_(0.0, 1.0)
    if config.saturation > 0:
        f = _factors(B, config.saturation, device, generator)
        x = (f * x + (1.0 - f) * _gray(x)).clamp_(0.0, 1.0)
    return x, y
