"""Random rescale and crop of images at their own size (the original protocol's training batches), on the device.

Per sample, as mmsegmentation's RandomResize + RandomCrop: a scale drawn from scale_range rescales the image (aspect
kept) so that its long side is base_size x scale (or its own long side x scale when base_size is unset); a window of
crop_size is cut at a random place; where the rescaled image is smaller than the crop, the rest is padded (image 0,
mask 255 = ignore, so padding is never trained on). With cat_max_ratio < 1 a crop in which one class covers more
than that share of the labelled pixels is drawn again (up to CAT_MAX_TRIES times), which keeps batches from being
all background. Every draw comes from one CPU generator, so the same (seed, epoch) gives the same crops on any device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .dataset import ImageStore
from .io import IGNORE_INDEX

CAT_MAX_TRIES = 10  # mmseg's RandomCrop draws at most 10 crops to satisfy cat_max_ratio


@dataclass(frozen=True)
class CropConfig:
    crop_size: tuple[int, int]  # (H, W) of every training crop
    base_size: int | None = None  # long side at scale 1.0; None: each image's own (cached) long side
    scale_range: tuple[float, float] = (0.5, 2.0)  # the rescale factor is drawn uniformly from [lo, hi]
    cat_max_ratio: float = 1.0  # largest share one class may hold in a crop (1.0: no limit)


def rescaled_size(height: int, width: int, base_size: int | None, scale: float) -> tuple[int, int]:
    """(H, W) of an image rescaled, aspect kept, to long side base_size x scale (own long side when unset)."""
    long = max(height, width)
    f = (base_size or long) * scale / long
    return max(1, round(height * f)), max(1, round(width * f))


def _uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def _offset(generator: torch.Generator, room: int) -> int:
    return int(torch.randint(0, room + 1, (), generator=generator)) if room > 0 else 0


def _nearest(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(h, w) uint8 resized by nearest to size, by index (PIL's NEAREST rule: source floor((i + 0.5) * h / H))."""
    h, w = mask.shape
    rows = ((torch.arange(size[0], device=mask.device) + 0.5) * (h / size[0])).long().clamp_(max=h - 1)
    cols = ((torch.arange(size[1], device=mask.device) + 0.5) * (w / size[1])).long().clamp_(max=w - 1)
    return mask[rows][:, cols]


def _acceptable(crop: torch.Tensor, num_classes: int, ratio: float) -> bool:
    counts = torch.bincount(crop.reshape(-1).long(), minlength=256)[:num_classes]
    total = counts.sum()
    return bool((counts > 0).sum() > 1 and counts.max() < ratio * total)


def crop_sample(
    image: torch.Tensor, mask: torch.Tensor, config: CropConfig, generator: torch.Generator, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample: uint8 image (3, h, w) and mask (h, w) on the device -> float image (3, H, W) in [0, 1] and
    uint8 mask (H, W) of config.crop_size, rescaled, cropped and padded."""
    ch, cw = config.crop_size
    h, w = mask.shape
    size = rescaled_size(h, w, config.base_size, _uniform(generator, *config.scale_range))
    x = image.float().div_(255.0)[None]  # (1, 3, h, w)
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=size[0] < h)  # (1, 3, H', W')
        mask = _nearest(mask, size)  # (H', W')
    for _ in range(CAT_MAX_TRIES if config.cat_max_ratio < 1.0 else 1):
        y0, x0 = _offset(generator, size[0] - ch), _offset(generator, size[1] - cw)
        crop = mask[y0:y0 + ch, x0:x0 + cw]
        if config.cat_max_ratio >= 1.0 or _acceptable(crop, num_classes, config.cat_max_ratio):
            break
    out_x = x.new_zeros(3, ch, cw)  # zeros where the rescaled image is smaller than the crop, as mmseg's pad
    out_y = mask.new_full((ch, cw), IGNORE_INDEX)
    part = x[0, :, y0:y0 + ch, x0:x0 + cw]
    out_x[:, :part.shape[1], :part.shape[2]] = part
    out_y[:crop.shape[0], :crop.shape[1]] = crop
    return out_x, out_y


def crop_batch(
    store: ImageStore,
    indices: list[int],
    config: CropConfig,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops of store's samples `indices`: float images (B, 3, H, W) in [0, 1] and uint8 masks (B, H, W) on
    `device` (each sample is moved there, then rescaled and cut there). `generator` is a CPU generator."""
    xs, ys = [], []
    for i in indices:
        image = torch.from_numpy(np.array(store.image(i))).to(device, non_blocking=True)  # (3, h, w) uint8
        mask = torch.from_numpy(np.array(store.mask(i))).to(device, non_blocking=True)  # (h, w) uint8
        x, y = crop_sample(image, mask, config, generator, store.num_classes)
        xs.append(x)
        ys.append(y)
    return torch.stack(xs), torch.stack(ys)  # (B, 3, H, W), (B, H, W)


def largest_crop_fits(store: ImageStore, config: CropConfig) -> bool:
    """Whether at least one image, at the largest scale, covers the whole crop (else every crop is mostly padding)."""
    ch, cw = config.crop_size
    hi = config.scale_range[1]
    return any(min(rescaled_size(int(h), int(w), config.base_size, hi)[0] - ch,
                   rescaled_size(int(h), int(w), config.base_size, hi)[1] - cw) >= 0 for h, w in store.sizes)


__all__ = ["CAT_MAX_TRIES", "CropConfig", "crop_batch", "crop_sample", "largest_crop_fits", "rescaled_size"]
