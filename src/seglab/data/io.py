"""Reading images and masks safely: mode conversion, EXIF orientation, validation, clear errors."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import SeglabError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _open(path: Path, what: str) -> Image.Image:
    path = Path(path)
    if not path.exists():
        raise SeglabError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise SeglabError(f"{what} is an empty file (0 bytes): {path}. Remove it or replace it.")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit; treat that as the error it is.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            img.load()  # decode now, so a truncated file fails here and not halfway through an epoch
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise SeglabError(
            f"{what} is larger than Pillow's decompression-bomb limit: {path} ({e}). "
            "Resize it, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust it."
        ) from None
    except UnidentifiedImageError:
        raise SeglabError(f"{what} is not an image Pillow can read: {path}. Remove it or replace it.") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise SeglabError(f"{what} could not be decoded ({e}): {path}. The file may be truncated or corrupt.") from None
    return img


def read_image(path: str | Path) -> Image.Image:
    """Read an image as 8-bit RGB, rotated upright by its EXIF orientation."""
    img = _open(Path(path), "image")
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not stop us: keep the pixels as stored
        pass
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit grayscale: scale to 8 bits by the type's range.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparent pixels on black (what a plain convert('RGB') of RGBA shows) explicitly.
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, img)
    return img.convert("RGB")


def read_mask(
    path: str | Path,
    num_classes: int,
    value_map: Mapping[int, int] | None = None,
    ignore_values: Sequence[int] = (255,),
) -> np.ndarray:
    """Read a class-id mask as a uint8 array (H, W); values must be class ids (after value_map) or 255 (ignore).

    value_map maps stored values to class ids (Oxford-IIIT Pet trimaps: {1: 0, 2: 1, 3: 2}).
    """
    path = Path(path)
    img = _open(path, "mask")
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:
        pass
    if img.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "HSV", "LAB"):
        arr = np.asarray(img.convert("RGB"))
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise SeglabError(
                f"mask is a colour ({img.mode}) image: {path}. Masks must hold class ids "
                "(a single-channel or palette PNG whose pixel values are 0..C-1, 255 = ignore)."
            )
        arr = arr[..., 0]
    elif img.mode == "P":
        arr = np.asarray(img)  # palette indices are the class ids
    elif img.mode in ("L", "1"):
        arr = np.asarray(img.convert("L"))
    elif img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.int64)
    elif img.mode == "LA":
        arr = np.asarray(img.convert("L"))
    else:
        raise SeglabError(f"mask has an unsupported mode {img.mode!r}: {path}. Save it as a grayscale PNG.")
    arr = np.asarray(arr, dtype=np.int64)
    if value_map is not None:
        out = np.full(arr.shape, -1, dtype=np.int64)
        for src, dst in value_map.items():
            out[arr == src] = dst
        for v in ignore_values:
            out[arr == v] = 255
        bad = np.unique(arr[out < 0])
        allowed = sorted(set(value_map) | set(ignore_values))
    else:
        out = arr
        valid = (arr >= 0) & (arr < num_classes)
        for v in ignore_values:
            valid |= arr == v
        bad = np.unique(arr[~valid])
        allowed = f"0..{num_classes - 1}" + (f" or {', '.join(map(str, ignore_values))} (ignore)" if ignore_values else "")
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise SeglabError(f"mask has values {shown} outside the class set ({allowed}): {path}")
    return out.astype(np.uint8)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside a folder, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
