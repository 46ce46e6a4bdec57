"""The dataset types every source turns into, decoded once: SegmentationDataset (every image resized to one
square, the article's protocol) and ImageStore (every image at its own size, the original protocol)."""

from __future__ import annotations

import dataclasses
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


class _MaskSummary:
    """What both dataset types say about their masks, from pixel_counts() and mask_format."""

    class_names: tuple[str, ...]
    split: str
    mask_format: MaskFormat | None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def pixel_counts(self) -> list[int]:
        raise NotImplementedError

    def describe_masks(self) -> str:
        """The one line saying how the masks were read, with this split's pixel share of every class."""
        counts = self.pixel_counts()
        total = sum(counts)
        shares = [c / total for c in counts] if total else None
        if self.mask_format is None:
            return f"class ids -> {', '.join(self.class_names)}"
        return self.mask_format.describe(shares, split=self.split)


@dataclass
class SegmentationDataset(_MaskSummary, torch.utils.data.Dataset):
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

    def image_array(self, i: int) -> np.ndarray:
        """Sample i's uint8 image (3, H, W)."""
        return self.images[i].numpy()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i].float().div(255.0), self.masks[i].long()

    def __repr__(self) -> str:
        return (
            f"SegmentationDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"size={self.image_size}, classes={self.class_names})"
        )


@dataclass
class ImageStore(_MaskSummary):
    """A split at its own resolution (long side capped by the cache's max_side): images and masks of every size in
    two flat uint8 arrays (memory-mapped from the cache) with an index. image(i) and mask(i) are views of them.

    Training cuts random crops from it (crops.py); evaluation scores at the masks' own size (evaluate.py).
    """

    name: str
    split: str
    pixels: np.ndarray  # flat uint8: every image as (3, h, w), one after another
    labels: np.ndarray  # flat uint8: every mask as (h, w), 255 = ignore
    offsets: np.ndarray  # (N,) int64: where mask i starts in labels (its image starts at 3x that in pixels)
    sizes: np.ndarray  # (N, 2) int64: (h, w) of sample i
    class_names: tuple[str, ...]
    ids: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    mask_format: MaskFormat | None = None
    max_side: int | None = None  # the cap on the long side the cache was built with (None: none)

    def __len__(self) -> int:
        return len(self.offsets)

    def size(self, i: int) -> tuple[int, int]:
        return int(self.sizes[i, 0]), int(self.sizes[i, 1])

    def image(self, i: int) -> np.ndarray:
        """Sample i's image, uint8 (3, h, w)."""
        h, w = self.size(i)
        start = 3 * int(self.offsets[i])
        return self.pixels[start:start + 3 * h * w].reshape(3, h, w)

    image_array = image

    def mask(self, i: int) -> np.ndarray:
        """Sample i's mask, uint8 (h, w), 255 = ignore."""
        h, w = self.size(i)
        start = int(self.offsets[i])
        return self.labels[start:start + h * w].reshape(h, w)

    def pixel_counts(self) -> list[int]:
        """Pixels of each class 0..C-1 over the split (ignore left out), at the stored size."""
        counts = np.bincount(self.labels, minlength=256)
        return [int(v) for v in counts[: self.num_classes]]

    def ignored_pixels(self) -> int:
        return int(np.count_nonzero(self.labels == IGNORE_INDEX))

    def subset(self, n: int) -> ImageStore:
        """The first n samples."""
        end = int(self.offsets[n - 1]) + int(self.sizes[n - 1].prod()) if n else 0
        return dataclasses.replace(self, pixels=self.pixels[:3 * end], labels=self.labels[:end],
                                   offsets=self.offsets[:n], sizes=self.sizes[:n], ids=self.ids[:n])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(image float (3, h, w) in [0, 1], mask int64 (h, w)), as SegmentationDataset's."""
        image = torch.from_numpy(np.array(self.image(i)))  # a copy: the store is a read-only map
        return image.float().div(255.0), torch.from_numpy(np.array(self.mask(i))).long()

    def __repr__(self) -> str:
        long = int(self.sizes.max()) if len(self) else 0
        return (f"ImageStore(name={self.name!r}, split={self.split!r}, n={len(self)}, own sizes up to {long} px, "
                f"classes={self.class_names})")
