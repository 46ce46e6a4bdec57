"""Procedural 3-class images: textured 'pets' on textured backgrounds, with pet/background/border masks.

Works offline at any size and count; sample i of a (seed, split) pair is always the same image. The border
class is a band around each pet's outline, like the Oxford-IIIT Pet trimaps' "unclassified" ring.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import SeglabError
from .masks import fixed_format

CLASS_NAMES = ("pet", "background", "border")
_SPLIT_OFFSETS = {"train": 0, "trainval": 0, "val": 1_000_003, "test": 1_000_003}


class SyntheticSource:
    """A seeded generator of `count` samples of size (size, size); see the module docstring."""

    name = "synthetic"
    class_names = CLASS_NAMES
    mask_format = fixed_format(CLASS_NAMES, {i: i for i in range(len(CLASS_NAMES))}, "synthetic class ids")

    def __init__(self, split: str = "train", count: int = 512, size: int = 128, seed: int = 0,
                 border: int | None = None):
        if split not in _SPLIT_OFFSETS:
            raise SeglabError(f"synthetic split must be one of {sorted(_SPLIT_OFFSETS)}, not {split!r}")
        if count < 1 or size < 8:
            raise SeglabError(f"synthetic needs count >= 1 and size >= 8 (got count={count}, size={size})")
        self.split = split
        self.count = count
        self.size = size
        self.seed = seed
        self.border = border if border is not None else max(1, size // 48)

    def __len__(self) -> int:
        return self.count

    def sample_id(self, i: int) -> str:
        return f"synthetic-{self.split}-{self.seed}-{i}"

    def fingerprint(self) -> str:
        return hashlib.sha256(f"v1-{self.count}-{self.size}-{self.seed}-{self.border}".encode()).hexdigest()

    def load(self, i: int) -> tuple[Image.Image, np.ndarray]:
        rng = np.random.default_rng([self.seed, _SPLIT_OFFSETS[self.split], i])
        image, mask = _make_sample(rng, self.size, self.border)
        return Image.fromarray(image), mask


def _texture(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, base: np.ndarray, strength: float) -> np.ndarray:
    """A colour field: base colour modulated by a few random sinusoids, (H, W, 3) float in [0, 1]."""
    field = np.zeros_like(yy)
    for _ in range(3):
        fy, fx = rng.uniform(-12, 12, size=2)
        field += np.sin(2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 2 * np.pi))
    field /= 3.0
    tint = rng.uniform(-1, 1, size=3)
    return base[None, None, :] + strength * field[..., None] * tint[None, None, :]


def _make_sample(rng: np.random.Generator, size: int, border: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    # Background: muted colours, strong low-frequency texture.
    bg = _texture(rng, yy, xx, rng.uniform(0.25, 0.75, size=3), 0.25)
    # Pet: a body ellipse plus a head and up to two limbs, saturated colour with spots.
    pet = np.zeros((size, size), dtype=bool)
    cy, cx = rng.uniform(0.35, 0.65, size=2)
    ry, rx = rng.uniform(0.18, 0.3, size=2)
    theta = rng.uniform(0, np.pi)
    parts = [(cy, cx, ry, rx, theta)]
    for _ in range(rng.integers(1, 4)):
        ang = rng.uniform(0, 2 * np.pi)
        d = rng.uniform(0.6, 1.0)
        parts.append((cy + d * ry * np.sin(ang), cx + d * rx * np.cos(ang), *rng.uniform(0.07, 0.14, size=2),
                      rng.uniform(0, np.pi)))
    for py, px, ay, ax, t in parts:
        dy, dx = yy - py, xx - px
        u = dy * np.cos(t) + dx * np.sin(t)
        v = -dy * np.sin(t) + dx * np.cos(t)
        pet |= (u / ay) ** 2 + (v / ax) ** 2 <= 1.0
    hue = rng.uniform(0, 1, size=3)
    pet_base = 0.15 + 0.7 * (hue / hue.max())
    fg = _texture(rng, yy, xx, pet_base, 0.12)
    spots = np.sin(2 * np.pi * rng.uniform(8, 16) * yy) * np.sin(2 * np.pi * rng.uniform(8, 16) * xx) > 0.6
    fg = np.where(spots[..., None], fg * 0.6, fg)
    image = np.where(pet[..., None], fg, bg)
    image = image + rng.normal(0, 0.03, size=image.shape)
    image = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    # Border: the ring within `border` pixels of the outline (dilation minus erosion).
    t = torch.from_numpy(pet.astype(np.float32))[None, None]
    k = 2 * border + 1
    dilated = F.max_pool2d(t, k, stride=1, padding=border)[0, 0].numpy() > 0
    eroded = -F.max_pool2d(-t, k, stride=1, padding=border)[0, 0].numpy() > 0
    mask = np.where(pet, 0, 1).astype(np.uint8)
    mask[dilated & ~eroded] = 2
    return image, mask
