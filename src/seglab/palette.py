"""Class colours and overlays with numpy and Pillow only (no torch), shared by figures, predict and the server."""

from __future__ import annotations

import numpy as np
from PIL import Image

# pet, background, border first (the Oxford-IIIT Pet trimap classes), then distinct colours for more classes.
_BASE = [(255, 140, 0), (30, 30, 60), (245, 245, 245), (0, 160, 255), (220, 20, 60), (60, 179, 113),
         (148, 0, 211), (255, 215, 0), (0, 206, 209), (199, 21, 133)]
IGNORE_COLOR = (128, 128, 128)


def palette(num_classes: int) -> np.ndarray:
    """A (max(num_classes, 10), 3) uint8 colour table; class c is drawn in palette[c]."""
    rng = np.random.default_rng(0)
    extra = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(max(0, num_classes - len(_BASE)))]
    return np.array(_BASE + extra, dtype=np.uint8)


def colorize_array(mask: np.ndarray, num_classes: int, colors: np.ndarray | None = None) -> np.ndarray:
    """Class ids (H, W) -> RGB (H, W, 3) uint8 (class c in colors[c], default palette()); 255 (ignore) is gray."""
    m = np.asarray(mask)
    pal = palette(num_classes) if colors is None else np.asarray(colors, dtype=np.uint8)
    out = pal[np.clip(m, 0, len(pal) - 1)]
    out[m == 255] = IGNORE_COLOR
    return out


OVERLAY_ROWS = 256  # rows blended at a time: a large photo's overlay needs no full-size float or colour copy


def overlay(image: Image.Image | np.ndarray, mask: np.ndarray, num_classes: int, alpha: float = 0.45) -> Image.Image:
    """The image (PIL, or an (H, W, 3) uint8 array) with its class mask blended over it (same size); computed in row
    chunks into one uint8 picture, so a large photo costs one more copy of itself, not five."""
    if isinstance(image, Image.Image) and image.size != (mask.shape[1], mask.shape[0]):
        mask = np.asarray(Image.fromarray(mask).resize(image.size, Image.Resampling.NEAREST))
    pixels = np.asarray(image if not isinstance(image, Image.Image) or image.mode == "RGB" else image.convert("RGB"))
    h, w = mask.shape
    out = np.empty((h, w, 3), dtype=np.uint8)
    for r in range(0, h, OVERLAY_ROWS):
        color = colorize_array(mask[r:r + OVERLAY_ROWS], num_classes).astype(np.float32)
        blended = pixels[r:r + OVERLAY_ROWS].astype(np.float32) * (1 - alpha) + color * alpha
        out[r:r + OVERLAY_ROWS] = np.rint(blended)  # as Image.blend: rounded to the nearest value
    return Image.frombuffer("RGB", (w, h), out, "raw", "RGB", 0, 1)
