"""Reading images and masks safely: mode conversion, EXIF orientation, validation, clear errors.

Also the data path's shared constants: the ignore value of class-id masks and the image interpolations.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import SeglabError, check_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IGNORE_INDEX = 255  # the mask value "ignore" (not trained on, not scored) in class-id masks, everywhere in seglab
# How images are resized to the model's size (masks always by nearest); here, torch-free, for predict and runtime.
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def check_interpolation(name: str) -> Image.Resampling:
    """The Pillow filter of one of INTERPOLATIONS; any other name is a SeglabError listing the valid ones."""
    if name not in INTERPOLATIONS:
        raise SeglabError(f"unknown interpolation {name!r}; choose one of {sorted(INTERPOLATIONS)}")
    return INTERPOLATIONS[name]


def open_image(path: str | Path, what: str) -> Image.Image:
    """Read and fully decode an image file as stored (not yet turned upright); `what` ("image", "mask") names it
    in errors."""
    path = check_file(path, what)
    try:
        # Decoded from memory: no file handle is left open, and Pillow 13 turns an EXIF-rotated TIFF upright
        # correctly only this way (from a path it scrambles the pixels).
        data = path.read_bytes()
    except OSError as e:
        raise SeglabError(f"cannot read the {what} {path} ({e})") from None
    return _decode(data, str(path), what)


def _decode(data: bytes, path: str, what: str, max_pixels: int | None = None) -> Image.Image:
    """Decode image bytes fully; `path` names the file (or upload) in errors. max_pixels: a stricter limit than
    Pillow's decompression-bomb limit (checked from the header, before any pixel is decoded)."""
    if not data:
        raise SeglabError(f"{what} is an empty file (0 bytes): {path}. Remove it or replace it.")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit; treat that as the error it is.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise Image.DecompressionBombError(
                    f"{img.width}x{img.height} = {img.width * img.height} pixels, over the limit of {max_pixels}")
            img.load()  # decode now, so a truncated file fails here and not halfway through an epoch
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise SeglabError(
            f"{what} is larger than Pillow's decompression-bomb limit: {path} ({e}). "
            "Resize it, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust it."
        ) from None
    except UnidentifiedImageError:
        raise SeglabError(f"{what} is not an image Pillow can read: {path}. Remove it or replace it.") from None
    except MemoryError:
        raise SeglabError(f"{what} is too large to decode in memory: {path}. Resize it.") from None
    except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways inside Pillow's decoders
        raise SeglabError(
            f"{what} could not be decoded ({type(e).__name__}: {e}): {path}. The file may be truncated or corrupt."
        ) from None
    return img


# EXIF orientation -> the transpose that turns the stored pixels upright (what ImageOps.exif_transpose does).
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def upright(img: Image.Image) -> tuple[Image.Image, Image.Transpose | None]:
    """The image turned upright by its EXIF orientation, and the transpose applied (None when none was)."""
    try:
        method = _EXIF_TRANSPOSE.get(img.getexif().get(0x0112, 1))
        if method is None:
            return img, None
        return img.transpose(method), method
    except Exception:  # noqa: BLE001 - a broken EXIF block must not stop us: keep the pixels as stored
        return img, None


def _read_image(path: Path) -> tuple[Image.Image, Image.Transpose | None, tuple[int, int]]:
    """(8-bit RGB image upright, the EXIF transpose applied or None, the stored (raw) size (W, H))."""
    return _as_rgb(open_image(path, "image"), path)


def decode_image(data: bytes, name: str = "upload", max_pixels: int | None = None) -> Image.Image:
    """Image bytes (an upload) -> 8-bit RGB upright, with read_image's checks; errors name `name`."""
    return _as_rgb(_decode(data, name, "image", max_pixels), name)[0]


def _as_rgb(raw: Image.Image, path: str | Path) -> tuple[Image.Image, Image.Transpose | None, tuple[int, int]]:
    img, method = upright(raw)
    try:
        if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            # 16/32-bit grayscale: scale to 8 bits by the type's range.
            arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
            top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
            arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
            img = Image.fromarray(arr, mode="L")
        if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
            # Composite transparent pixels on black (what a plain convert('RGB') of RGBA shows) explicitly.
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (0, 0, 0, 255))
            img = Image.alpha_composite(bg, img)
        return img.convert("RGB"), method, raw.size
    except Exception as e:  # noqa: BLE001 - an exotic mode Pillow cannot convert
        raise SeglabError(
            f"image mode {img.mode!r} cannot be converted to RGB ({e}): {path}. Save it as an RGB JPEG or PNG."
        ) from None


def read_image(path: str | Path) -> Image.Image:
    """Read an image as 8-bit RGB, rotated upright by its EXIF orientation."""
    return _read_image(Path(path))[0]


_GREY_MODES = ("L", "LA", "I;16", "I;16B", "I;16L", "I;16N", "I")
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "HSV", "LAB")


@dataclass
class RawMask:
    """A mask file's pixels as stored: grey/palette values (H, W) int64, or colours (H, W, 3) uint8."""

    pixels: np.ndarray
    kind: str  # "grey" | "palette" | "rgb"
    jpeg: bool
    palette: np.ndarray | None = None  # (256, 3) uint8 for palette masks
    mode: str = ""  # the file's Pillow mode


def read_raw_mask(path: str | Path, jpeg_grey: bool = True) -> RawMask:
    """Read a mask file as stored (turned upright by its EXIF orientation); grey saved as RGB comes back grey.

    jpeg_grey: an RGB JPEG whose channels differ by compression noise only is grey too (the mean of the
    channels); without it such a mask is a colour mask.
    """
    path = Path(path)
    stored = open_image(path, "mask")
    jpeg = stored.format == "JPEG" or path.suffix.lower() in (".jpg", ".jpeg")
    img, _ = upright(stored)
    mode = img.mode
    try:
        if mode == "P":
            pal = np.zeros((256, 3), dtype=np.uint8)
            raw_pal = np.frombuffer(bytes(img.getpalette() or []), dtype=np.uint8)[: 256 * 3]
            pal.reshape(-1)[: raw_pal.size] = raw_pal
            return RawMask(np.asarray(img).astype(np.int64), "palette", jpeg, pal, mode)
        if mode == "1":  # classes 0 and 1 (convert("L") would give 255)
            return RawMask(np.asarray(img).astype(np.int64), "grey", jpeg, mode=mode)
        if mode in _GREY_MODES:
            grey = img.convert("L") if mode == "LA" else img
            return RawMask(np.asarray(grey).astype(np.int64), "grey", jpeg, mode=mode)
        if mode in _COLOUR_MODES:
            rgb = np.asarray(img.convert("RGB"))
            r, g, b = (rgb[..., c].astype(np.int16) for c in range(3))
            if np.array_equal(r, g) and np.array_equal(r, b):
                return RawMask(r.astype(np.int64), "grey", jpeg, mode=mode)
            if jpeg and jpeg_grey:
                # A grey mask saved as an RGB JPEG: the channels differ by the compression noise only.
                spread = np.maximum(np.abs(r - g), np.maximum(np.abs(r - b), np.abs(g - b)))
                if np.mean(spread <= 24) >= 0.99:
                    return RawMask(rgb.mean(axis=2).round().astype(np.int64), "grey", jpeg, mode=mode)
            return RawMask(rgb, "rgb", jpeg, mode=mode)
    except Exception as e:  # noqa: BLE001 - an exotic mode Pillow cannot convert
        raise SeglabError(f"mask mode {mode!r} cannot be read ({e}): {path}. Save it as a PNG.") from None
    raise SeglabError(f"mask has an unsupported mode {mode!r}: {path}. Save it as a grayscale or palette PNG.")


def read_mask(
    path: str | Path,
    num_classes: int,
    value_map: Mapping[int, int] | None = None,
    ignore_values: Sequence[int] = (IGNORE_INDEX,),
) -> np.ndarray:
    """Read a class-id mask as a uint8 array (H, W); values must be class ids (after value_map) or 255 (ignore).

    value_map maps stored values to class ids (Oxford-IIIT Pet trimaps: {1: 0, 2: 1, 3: 2}). A mask carrying its
    own EXIF orientation is turned upright by it, like an image. (A dataset whose masks' format is detected reads
    them with masks.MaskFormat instead.)
    """
    path = Path(path)
    if value_map is None and not (isinstance(num_classes, int) and 1 <= num_classes <= 255):
        raise SeglabError(
            f"num_classes must be 1..255 (class ids are stored as 8-bit values, 255 = ignore), not {num_classes!r}"
        )
    raw = read_raw_mask(path, jpeg_grey=False)
    if raw.kind == "rgb":
        raise SeglabError(
            f"mask is a colour ({raw.mode}) image: {path}. Masks must hold class ids "
            "(a single-channel or palette PNG whose pixel values are 0..C-1, 255 = ignore)."
        )
    arr = raw.pixels  # palette indices are the class ids
    if value_map is not None:
        out = np.full(arr.shape, -1, dtype=np.int64)
        for src, dst in value_map.items():
            out[arr == src] = dst
        for v in ignore_values:
            out[arr == v] = IGNORE_INDEX
        bad = np.unique(arr[out < 0])
        allowed = sorted(set(value_map) | set(ignore_values))
    else:
        out = arr
        valid = (arr >= 0) & (arr < num_classes)
        for v in ignore_values:
            valid |= arr == v
        bad = np.unique(arr[~valid])
        ignored = f" or {', '.join(map(str, ignore_values))} (ignore)" if ignore_values else ""
        allowed = f"0..{num_classes - 1}{ignored}"
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise SeglabError(f"mask has values {shown} outside the class set ({allowed}): {path}")
    return out.astype(np.uint8)


def read_pair(
    image_path: str | Path,
    mask_path: str | Path,
    num_classes: int,
    value_map: Mapping[int, int] | None = None,
    ignore_values: Sequence[int] = (IGNORE_INDEX,),
    reader: Callable[[Path], np.ndarray] | None = None,
) -> tuple[Image.Image, np.ndarray]:
    """An image (8-bit RGB, upright) and its mask (uint8 class ids) of the same size, aligned.

    reader, when given, reads the mask instead of read_mask (a dataset's detected mask format: masks.MaskFormat.read).

    The mask is aligned with the image as displayed (upright). The image is turned upright by its EXIF
    orientation; the mask is turned by its own EXIF orientation only. When the image was rotated by 90 or 270
    degrees and the mask has the image's stored size (not its upright size), the mask was drawn on the stored
    pixels: it gets the image's transpose too. (A 180-degree turn or a flip keeps the size, so such a mask is
    taken as drawn on the upright image, as are masks of square images.) Any other size difference is an error
    naming both files.
    """
    image_path, mask_path = Path(image_path), Path(mask_path)
    image, method, raw_size = _read_image(image_path)
    if reader is not None:
        mask = reader(mask_path)
    else:
        mask = read_mask(mask_path, num_classes, value_map=value_map, ignore_values=ignore_values)
    mask_size = (mask.shape[1], mask.shape[0])
    if mask_size != image.size:
        if method is not None and mask_size == raw_size:
            mask = np.asarray(Image.fromarray(mask).transpose(method))
        else:
            w, h = image.size
            stored = f", stored {raw_size[0]}x{raw_size[1]} before its EXIF rotation" if method is not None else ""
            raise SeglabError(
                f"mask size {mask_size[0]}x{mask_size[1]} differs from its image's size {w}x{h}{stored}: mask "
                f"{mask_path}, image {image_path}. A mask must have its image's size; fix or remove the pair."
            )
    return image, mask


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside a folder, sorted by name (hidden files such as macOS '._x.jpg' are left out)."""
    folder = Path(folder)
    try:
        return sorted(
            p for p in folder.iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
        )
    except OSError as e:
        raise SeglabError(f"cannot list the folder {folder} ({e})") from None
