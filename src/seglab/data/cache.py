"""Decode and resize a source once into uint8 arrays on disk, memory-mapped on later reads.

The cache key covers the source (its fingerprint: files, sizes, times or generator seed, and how its masks are
read: the mask format's key, data/masks.py), the split, the size and the interpolation, so a changed source,
mask format or option builds a new cache and never reads a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..atomic import atomic_write, is_disk_full
from ..errors import SeglabError
from .dataset import ImageStore, SegmentationDataset, SegmentationSource
from .io import check_interpolation

_CACHE_VERSION = 1


def data_home() -> Path:
    """Where datasets and caches live: $SEGLAB_DATA, else ~/.cache/seglab."""
    return Path(os.environ.get("SEGLAB_DATA") or Path.home() / ".cache" / "seglab").expanduser()


def as_size(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """An int or (H, W) as a checked (H, W) of positive ints; None (each image's own size) stays None."""
    if image_size is None:
        return None
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    h, w = (int(v) for v in image_size)
    if h < 1 or w < 1:
        raise SeglabError(f"image_size must be positive, not {image_size}")
    return h, w


def resize_pair(
    image: Image.Image, mask: np.ndarray, size: tuple[int, int], interpolation: str
) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image (by `interpolation`) and its mask (always nearest) to size (H, W), aspect not kept."""
    resample = check_interpolation(interpolation)
    h, w = size
    img = np.asarray(image.resize((w, h), resample), dtype=np.uint8)  # (H, W, 3)
    m = np.asarray(Image.fromarray(mask).resize((w, h), Image.Resampling.NEAREST), dtype=np.uint8)  # (H, W)
    return img, m


def cache_key(source: SegmentationSource, size: tuple[Any, Any], interpolation: str) -> str:
    fmt = getattr(source, "mask_format", None)
    blob = json.dumps(
        [_CACHE_VERSION, source.name, source.split, list(size), interpolation, source.fingerprint(),
         fmt.key() if fmt is not None else None]
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def load_cached(
    source: SegmentationSource,
    size: tuple[int, int],
    interpolation: str = "bilinear",
    cache_dir: str | Path | None = None,
    skip_bad: bool = False,
    quiet: bool = False,
) -> SegmentationDataset:
    """Build (once) or read the uint8 cache of a source at `size` and return it as a SegmentationDataset.

    A sample that fails to load raises its SeglabError, naming the file, before anything is cached; with
    skip_bad=True it is left out instead and listed in dataset.skipped.
    """
    root = Path(cache_dir) if cache_dir is not None else data_home() / "cache"
    key = cache_key(source, size, interpolation)
    folder = root / f"{source.name}-{source.split}-{size[0]}x{size[1]}-{key}"
    if not (folder / "meta.json").exists():
        _build(source, size, interpolation, folder, skip_bad, quiet)
    cached = _read(folder)
    if cached is None or (cached[2]["skipped"] and not skip_bad):
        # A damaged cache (a disk error, an edited file) is rebuilt. A cache built with skip_bad is rebuilt
        # without it, so that the bad files stop the run with their own message.
        shutil.rmtree(folder, ignore_errors=True)
        _build(source, size, interpolation, folder, skip_bad, quiet)
        cached = _read(folder)
        if cached is None:
            raise SeglabError(f"the cache just written to {folder} cannot be read back; check the disk, or set "
                              "SEGLAB_DATA to another folder")
    images, masks, meta = cached
    return SegmentationDataset(
        name=source.name,
        split=source.split,
        images=torch.from_numpy(images),  # (N, 3, H, W) uint8, copied once from the map into memory
        masks=torch.from_numpy(masks),  # (N, H, W) uint8
        class_names=tuple(meta["class_names"]),
        ids=meta["ids"],
        skipped=[tuple(s) for s in meta["skipped"]],
        mask_format=getattr(source, "mask_format", None),
    )


def _read(folder: Path) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """(images, masks, meta) of a cache folder, or None when any part is missing or damaged. Never unpickles."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        images = np.array(np.load(folder / "images.npy", mmap_mode="r", allow_pickle=False))
        masks = np.array(np.load(folder / "masks.npy", mmap_mode="r", allow_pickle=False))
        n = len(meta["ids"])
        ok = (images.dtype == np.uint8 and masks.dtype == np.uint8 and images.ndim == 4 and masks.ndim == 3
              and images.shape[0] == masks.shape[0] == n and images.shape[1] == 3
              and images.shape[2:] == masks.shape[1:] and isinstance(meta["skipped"], list)
              and isinstance(meta["class_names"], list))
        return (images, masks, meta) if ok else None
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None


def _decoded(source: SegmentationSource, skip_bad: bool, quiet: bool, desc: str,
             skipped: list[tuple[str, str]]) -> Iterator[tuple[str, Image.Image, np.ndarray]]:
    """(sample id, RGB image, mask) of every sample that loads; a bad one raises (or, with skip_bad, is appended to
    `skipped` and left out). Every file is decoded here, before training starts: a bad one stops the run now, never
    halfway through an epoch."""
    n = len(source)
    if n == 0:
        raise SeglabError(f"dataset {source.name!r} split {source.split!r} has no samples")
    for i in tqdm(range(n), desc=desc, disable=quiet, leave=False):
        try:
            try:
                image, mask = source.load(i)
            except (SeglabError, AssertionError):  # an AssertionError is a bug (or a test), not a bad file
                raise
            except Exception as e:  # noqa: BLE001 - whatever a damaged file makes a decoder raise
                raise SeglabError(f"sample {source.sample_id(i)} could not be read ({type(e).__name__}: {e})") from e
            if image.size != (mask.shape[1], mask.shape[0]):
                raise SeglabError(
                    f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size "
                    f"{image.size[0]}x{image.size[1]} for sample {source.sample_id(i)}"
                )
        except SeglabError as e:
            if not skip_bad:
                raise SeglabError(
                    f"{e} (--skip-bad, or skip_bad=True, leaves such files out and lists them)"
                ) from e.__cause__
            skipped.append((source.sample_id(i), str(e)))
            continue
        yield source.sample_id(i), image, mask
    if len(skipped) == n:
        raise SeglabError(
            f"dataset {source.name!r} split {source.split!r}: every sample was bad ({len(skipped)} skipped)"
        )


def _meta(source: SegmentationSource, ids: list[str], skipped: list[tuple[str, str]], **extra: Any) -> dict:
    fmt = getattr(source, "mask_format", None)
    return {"source": source.name, "split": source.split, **extra, "class_names": list(source.class_names),
            "mask_format": fmt.to_dict() if fmt is not None else None, "ids": ids, "skipped": skipped}


def _write(folder: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """The cache folder's .npy files and meta.json, written whole or not at all."""
    def write(tmp: Path) -> None:
        tmp.mkdir()
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
        (tmp / "meta.json").write_text(json.dumps(meta))

    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    # A killed build leaves no half cache; a cache of the same key that another process built meanwhile holds
    # the same content, and is kept.
    atomic_write(folder, write, error=cache_error, keep_existing=True)


def _build(
    source: SegmentationSource,
    size: tuple[int, int],
    interpolation: str,
    folder: Path,
    skip_bad: bool,
    quiet: bool,
) -> None:
    h, w = size
    images = np.empty((len(source), 3, h, w), dtype=np.uint8)
    masks = np.empty((len(source), h, w), dtype=np.uint8)
    ids: list[str] = []
    skipped: list[tuple[str, str]] = []
    for sid, image, mask in _decoded(source, skip_bad, quiet, f"caching {source.name}/{source.split} at {h}x{w}",
                                     skipped):
        img, m = resize_pair(image, mask, size, interpolation)
        images[len(ids)] = img.transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)
        masks[len(ids)] = m
        ids.append(sid)
    kept = len(ids)
    _write(folder, {"images": images[:kept], "masks": masks[:kept]},
           _meta(source, ids, skipped, size=[h, w], interpolation=interpolation))


# ---- the original protocol: every image at its own size (long side capped), in one flat store with an index

def capped_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """(H, W) scaled down, aspect kept, so that the long side is at most max_side (None: unchanged)."""
    long = max(height, width)
    if not max_side or long <= max_side:
        return height, width
    f = max_side / long
    return max(1, round(height * f)), max(1, round(width * f))


def load_original(
    source: SegmentationSource,
    max_side: int | None = None,
    interpolation: str = "bilinear",
    cache_dir: str | Path | None = None,
    skip_bad: bool = False,
    quiet: bool = False,
) -> ImageStore:
    """Build (once) or read the cache of a source at its own resolution (long side capped at max_side, masks by
    nearest) and return it as an ImageStore, memory-mapped. Bad samples as load_cached."""
    check_interpolation(interpolation)
    if max_side is not None and max_side < 1:
        raise SeglabError(f"max_side must be positive (or unset for no cap), not {max_side}")
    root = Path(cache_dir) if cache_dir is not None else data_home() / "cache"
    key = cache_key(source, ("original", max_side), interpolation)
    folder = root / f"{source.name}-{source.split}-original{max_side or ''}-{key}"
    for _ in range(2):
        if not (folder / "meta.json").exists():
            _build_original(source, max_side, interpolation, folder, skip_bad, quiet)
        store = _read_original(folder, source)
        if store is not None and not (store.skipped and not skip_bad):
            return store
        # Damaged (a disk error, an edited file), or built with skip_bad: rebuild, as load_cached does.
        shutil.rmtree(folder, ignore_errors=True)
    raise SeglabError(f"the cache just written to {folder} cannot be read back; check the disk, or set "
                      "SEGLAB_DATA to another folder")


def _build_original(source: SegmentationSource, max_side: int | None, interpolation: str, folder: Path,
                    skip_bad: bool, quiet: bool) -> None:
    pixels: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    sizes: list[tuple[int, int]] = []
    ids: list[str] = []
    skipped: list[tuple[str, str]] = []
    cap = f" (long side at most {max_side})" if max_side else ""
    for sid, image, mask in _decoded(source, skip_bad, quiet, f"caching {source.name}/{source.split} at its own "
                                     f"size{cap}", skipped):
        size = capped_size(mask.shape[0], mask.shape[1], max_side)
        img, m = resize_pair(image, mask, size, interpolation) if size != mask.shape else (
            np.asarray(image.convert("RGB"), dtype=np.uint8), np.asarray(mask, dtype=np.uint8))
        pixels.append(img.transpose(2, 0, 1).reshape(-1))  # (3, h, w) flattened
        labels.append(m.reshape(-1))
        sizes.append(size)
        ids.append(sid)
    sizes_a = np.array(sizes, dtype=np.int64).reshape(-1, 2)
    offsets = np.concatenate([[0], np.cumsum(sizes_a.prod(1))[:-1]]).astype(np.int64)
    _write(folder, {"pixels": np.concatenate(pixels), "labels": np.concatenate(labels), "offsets": offsets,
                    "sizes": sizes_a},
           _meta(source, ids, skipped, size="original", max_side=max_side, interpolation=interpolation))


def _read_original(folder: Path, source: SegmentationSource) -> ImageStore | None:
    """The ImageStore of a cache folder (memory-mapped), or None when any part is missing or damaged."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                  for name in ("pixels", "labels", "offsets", "sizes")}
        n = len(meta["ids"])
        sizes, offsets = np.array(arrays["sizes"]), np.array(arrays["offsets"])
        total = int(sizes.prod(1).sum()) if n else 0
        ok = (arrays["pixels"].dtype == np.uint8 and arrays["labels"].dtype == np.uint8
              and sizes.shape == (n, 2) and offsets.shape == (n,) and arrays["labels"].shape == (total,)
              and arrays["pixels"].shape == (3 * total,) and isinstance(meta["skipped"], list))
        if not ok:
            return None
        return ImageStore(name=source.name, split=source.split, pixels=arrays["pixels"], labels=arrays["labels"],
                          offsets=offsets, sizes=sizes, class_names=tuple(meta["class_names"]), ids=meta["ids"],
                          skipped=[tuple(s) for s in meta["skipped"]], mask_format=getattr(source, "mask_format", None),
                          max_side=meta.get("max_side"))
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None


def load_source(source: SegmentationSource, size: tuple[int, int] | None, interpolation: str,
                max_side: int | None = None, **options: Any) -> SegmentationDataset | ImageStore:
    """load_cached at `size` (the article protocol), or load_original when size is None (the original protocol)."""
    if size is None:
        return load_original(source, max_side, interpolation, **options)
    return load_cached(source, size, interpolation, **options)


def cache_error(e: OSError, folder: Path) -> SeglabError:
    """The message of a failed cache write: a full disk, or another OSError, with what to do."""
    what = "the disk is full" if is_disk_full(e) else f"cannot write ({e})"
    return SeglabError(f"{what} while writing the dataset cache {folder}. Free some space, or set SEGLAB_DATA "
                       "(or cache_dir) to a folder with room.")
