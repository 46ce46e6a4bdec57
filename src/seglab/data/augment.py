"""Batched augmentations on the training device: image and mask flipped (and turned) together, photometric
distortion and blur on images.

The article applies RandomHorizontalFlip(0.5) to image and trimap together and ColorJitter(contrast=0.3) to
the image, per sample on the CPU; here the same transforms run on a whole batch at once on the device. The
article's draws come first and in the same order, so its path stays exact; vertical flips, quarter turns (aerial
and microscopy data), hue and blur draw after them, only when on. Hue turns the colour around the YIQ chroma plane
(a 3x3 matrix per image; torchvision's adjust_hue goes through HSV instead), blur is a Gaussian of random sigma.
Why seglab's own code rather than kornia.augmentation: measured in benchmarks/augment_speed.py.
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights, so contrast matches ColorJitter


@dataclass
class AugmentConfig:
    hflip: float = 0.5  # probability of a horizontal flip of image and mask
    brightness: float = 0.0  # factor drawn from [1 - b, 1 + b], as ColorJitter
    contrast: float = 0.3  # factor drawn from [1 - c, 1 + c], blended with the image's mean gray
    saturation: float = 0.0  # factor drawn from [1 - s, 1 + s], blended with the image's grayscale
    hue: float = 0.0  # shift drawn from [-h, h] of a full turn (ColorJitter's hue range: h <= 0.5)
    vflip: float = 0.0  # probability of a vertical flip of image and mask
    rot90: float = 0.0  # probability of a quarter turn (1, 2 or 3 of them) of image and mask; square crops only
    blur: float = 0.0  # probability of a Gaussian blur, sigma drawn from BLUR_SIGMA


BLUR_SIGMA = (0.1, 2.0)  # as torchvision's GaussianBlur default range
BLUR_KERNEL = 7  # covers 1.5 sigma of the widest blur each side; wider would cost more than it changes
_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


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


def _hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Turn each image's colours by shift (B,) of a full turn around the YIQ chroma plane."""
    t = torch.tensor(_YIQ, device=x.device, dtype=x.dtype)  # RGB -> YIQ
    angle = shift * (2 * math.pi)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(len(shift), 3, 3, device=x.device, dtype=x.dtype)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    m = torch.linalg.inv(t) @ rot @ t  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", m, x).clamp_(0.0, 1.0)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of each image (B, 3, H, W) with its own sigma (B,), separable, borders reflected."""
    B, C = x.shape[:2]
    r = BLUR_KERNEL // 2
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(C, 0)  # (B*C, K)
    y = F.pad(x.reshape(1, B * C, *x.shape[2:]), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=B * C)  # along W
    y = F.conv2d(y, k[:, None, :, None], groups=B * C)  # along H
    return y.reshape(x.shape)


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    config: AugmentConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch on its device: images (B, 3, H, W), uint8 or float in [0, 1], and masks (B, H, W) ->
    float images in [0, 1] and int64 masks. Random draws come from `generator` (on the batch's device)."""
    B = images.shape[0]
    device = images.device
    x = to_float(images) if images.dtype == torch.uint8 else images  # (B, 3, H, W)
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
    # Not in the article: drawn after its draws, and only when on, so that its path stays exact.
    if config.hue > 0:
        x = _hue(x, (torch.rand(B, device=device, generator=generator) * 2 - 1) * config.hue)
    if config.vflip > 0:
        flip = torch.rand(B, device=device, generator=generator) < config.vflip  # (B,)
        x = torch.where(flip.view(B, 1, 1, 1), x.flip(-2), x)
        y = torch.where(flip.view(B, 1, 1), y.flip(-2), y)
    if config.rot90 > 0:
        turns = torch.randint(1, 4, (B,), device=device, generator=generator)
        turns = torch.where(torch.rand(B, device=device, generator=generator) < config.rot90, turns, 0)
        for k in (1, 2, 3):  # square batches only (validated with the config)
            sel = (turns == k)
            x = torch.where(sel.view(B, 1, 1, 1), x.rot90(k, (-2, -1)), x)
            y = torch.where(sel.view(B, 1, 1), y.rot90(k, (-2, -1)), y)
    if config.blur > 0:
        on = torch.rand(B, device=device, generator=generator) < config.blur
        lo, hi = BLUR_SIGMA
        sigma = lo + torch.rand(B, device=device, generator=generator) * (hi - lo)
        x = torch.where(on.view(B, 1, 1, 1), _blur(x, sigma), x)
    return x, y
