"""Decode and resize a source once into uint8 arrays on disk, memory-mapped on later reads.

The cache key covers the source (its fingerprint: files, sizes, times or generator seed), the split, the
size and the interpolation, so a changed source or option builds a new cache and never reads a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..errors import SeglabError
from .dataset import SegmentationDataset, SegmentationSource

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
_CACHE_VERSION = 1


def data_home() -> Path:
    """Where datasets and caches live: $SEGLAB_DATA, else ~/.cache/seglab."""
    return Path(os.environ.get("SEGLAB_DATA") or Path.home() / ".cache" / "seglab").expanduser()


def resize_pair(
    image: Image.Image, mask: np.ndarray, size: tuple[int, int], interpolation: str
) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image (by `interpolation`) and its mask (always nearest) to size (H, W), aspect not kept."""
    if interpolation not in INTERPOLATIONS:
        raise SeglabError(f"unknown interpolation {interpolation!r}; choose one of {sorted(INTERPOLATIONS)}")
    h, w = size
    img = np.asarray(image.resize((w, h), INTERPOLATIONS[interpolation]), dtype=np.uint8)  # (H, W, 3)
    m = np.asarray(Image.fromarray(mask).resize((w, h), Image.Resampling.NEAREST), dtype=np.uint8)  # (H, W)
    return img, m


def cache_key(source: SegmentationSource, size: tuple[int, int], interpolation: str) -> str:
    blob = json.dumps(
        [_CACHE_VERSION, source.name, source.split, list(size), interpolation, source.fingerprint()]
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
    meta = json.loads((folder / "meta.json").read_text())
    if meta["skipped"] and not skip_bad:
        # The cache was built with skip_bad; without it the bad files must stop the run, so rebuild to find them.
        shutil.rmtree(folder, ignore_errors=True)
        _build(source, size, interpolation, folder, skip_bad, quiet)
        meta = json.loads((folder / "meta.json").read_text())
    images = np.load(folder / "images.npy", mmap_mode="r")
    masks = np.load(folder / "masks.npy", mmap_mode="r")
    return SegmentationDataset(
        name=source.name,
        split=source.split,
        images=torch.from_numpy(np.array(images)),  # (N, 3, H, W) uint8, copied once from the map into memory
        masks=torch.from_numpy(np.array(masks)),  # (N, H, W) uint8
        class_names=tuple(meta["class_names"]),
        ids=meta["ids"],
        skipped=[tuple(s) for s in meta["skipped"]],
    )


def _build(
    source: SegmentationSource,
    size: tuple[int, int],
    interpolation: str,
    folder: Path,
    skip_bad: bool,
    quiet: bool,
) -> None:
    n = len(source)
    if n == 0:
        raise SeglabError(f"dataset {source.name!r} split {source.split!r} has no samples")
    h, w = size
    images = np.empty((n, 3, h, w), dtype=np.uint8)
    masks = np.empty((n, h, w), dtype=np.uint8)
    ids: list[str] = []
    skipped: list[tuple[str, str]] = []
    kept = 0
    for i in tqdm(range(n), desc=f"caching {source.name}/{source.split} at {h}x{w}", disable=quiet, leave=False):
        try:
            image, mask = source.load(i)
            if image.size != (mask.shape[1], mask.shape[0]):
                raise SeglabError(
                    f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size "
                    f"{image.size[0]}x{image.size[1]} for sample {source.sample_id(i)}"
                )
        except SeglabError as e:
            if not skip_bad:
                raise
            skipped.append((source.sample_id(i), str(e)))
            continue
        img, m = resize_pair(image, mask, size, interpolation)
        images[kept] = img.transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)
        masks[kept] = m
        ids.append(source.sample_id(i))
        kept += 1
    if kept == 0:
        raise SeglabError(f"dataset {source.name!r} split {source.split!r}: every sample was bad ({len(skipped)} skipped)")
    # Write into a temporary folder beside the final one, then rename: a killed build leaves no half cache.
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        np.save(tmp / "images.npy", images[:kept])
        np.save(tmp / "masks.npy", masks[:kept])
        meta = {
            "source": source.name,
            "split": source.split,
            "size": [h, w],
            "interpolation": interpolation,
            "class_names": list(source.class_names),
            "ids": ids,
            "skipped": skipped,
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
