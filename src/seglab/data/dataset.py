"""The dataset type every source turns into: uint8 image and mask tensors decoded and resized once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from .io import IGNORE_INDEX
from .masks import MaskFormat


class SegmentationSource(Protocol):
    """Where samples come from (a dataset on disk, a generator). cache.py turns a source into arrays.

    load(i) returns an 8-bit RGB PIL image and a uint8 class-id mask (H, W) of the same size (255 = ignore).
    fingerprint() changes whenever the samples would change (files, their sizes and times, generator seed).
    """

    name: str
    split: str
    class_names: tuple[str, ...]

    def __len__(self) -> int: ...

    def sample_id(self, i: int) -> str: ...

    def load(self, i: int) -> tuple[Image.Image, np.ndarray]: ...

    def fingerprint(self) -> str: ...


@dataclass
class SegmentationDataset(torch.utils.data.Dataset):
    """A split held as uint8 tensors: images (N, 3, H, W) and masks (N, H, W), 255 = ignore.

    Indexing gives (image float (3, H, W) in [0, 1], mask int64 (H, W)), the library's conventions.
    Training moves the whole uint8 tensors to the device and augments batches there (see augment.py).
    """

    name: str
    split: str
    images: torch.Tensor
    masks: torch.Tensor
    class_names: tuple[str, ...]
    ids: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (sample id, reason) left out by skip_bad
    mask_format: MaskFormat | None = None  # how the source's masks were read (data/masks.py)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def pixel_counts(self) -> list[int]:
        """Pixels of each class 0..C-1 over the split (ignore left out), at the cached size."""
        counts = torch.bincount(self.masks.reshape(-1).long(), minlength=256)
        return [int(v) for v in counts[: self.num_classes]]

    def ignored_pixels(self) -> int:
        """Pixels marked ignore (255) over the split."""
        return int((self.masks == IGNORE_INDEX).sum())

    def describe_masks(self) -> str:
        """The one line saying how the masks were read, with this split's pixel share of every class."""
        counts = self.pixel_counts()
        total = sum(counts)
        shares = [c / total for c in counts] if total else None
        if self.mask_format is None:
            return f"class ids -> {', '.join(self.class_names)}"
        return self.mask_format.describe(shares, split=self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i].float().div(255.0), self.masks[i].long()

    def __repr__(self) -> str:
        return (
            f"SegmentationDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"size={self.image_size}, classes={self.class_names})"
        )
