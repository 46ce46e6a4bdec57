"""A user's own data: images/ and masks/ folders with matching file names, in any mask format masks.py reads.

Layout (either):
    ROOT/images/*.jpg|png...   ROOT/masks/<stem>.png          no split folders: "train" and "val" are a stable
                                                              80/20 split by file name, "all" is everything
    ROOT/train/images, ROOT/train/masks, ROOT/val/...         split folders (also training/, valid/, validation/,
                                                              test/ or any other name given as the split)
masks/ may also be called labels/, annotations/ or gt/; a mask is found by its image's stem, also with a
_mask, _label, _gt or _seg suffix (photo.jpg -> photo.png or photo_mask.png). An optional ROOT/classes.json names
the classes (["background", "cat"]) or maps colours ([{"name": "cat", "color": [255, 0, 0]}, ...]). How the
masks encode classes is detected once over every mask of ROOT (mask_detect.py) and reported by describe().
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import SeglabError
from .classes import ClassSpec, read_classes_json
from .io import IGNORE_INDEX, list_images, read_pair
from .mask_detect import MaskScan, detect_mask_format, scan_masks
from .masks import MaskFormat
from .splits import SPLIT_ALIASES, canonical_split

_VAL_FRACTION = 0.2
_IMAGE_DIRS = ("images", "imgs", "img", "image", "JPEGImages")
_MASK_DIRS = ("masks", "mask", "labels", "label", "annotations", "gt", "groundtruth", "ground_truth",
              "SegmentationClass")
_MASK_SUFFIXES = ("_mask", "-mask", "_masks", "_label", "_labels", "-label", "_gt", "_seg", "_segmentation")


def _pair_dirs(base: Path) -> tuple[Path, Path] | None:
    """(images dir, masks dir) directly inside base, or None when base has no images folder."""
    images = next((base / d for d in _IMAGE_DIRS if (base / d).is_dir()), None)
    if images is None:
        return None
    masks = next((base / d for d in _MASK_DIRS if (base / d).is_dir()), base / "masks")
    return images, masks


def split_folders(root: Path) -> dict[str, tuple[Path, Path]]:
    """Split name -> (images dir, masks dir) for every sub-folder of root that holds an images folder."""
    out = {}
    try:
        subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise SeglabError(f"cannot list the folder {root} ({e})") from None
    for sub in subs:
        dirs = _pair_dirs(sub)
        if dirs is not None and sub.name not in _IMAGE_DIRS + _MASK_DIRS:
            out[sub.name] = dirs
    return out


def _match_masks(images: list[Path], mask_files: list[Path]) -> tuple[list[Path | None], list[Path]]:
    """Each image's mask (by stem, or stem + a _mask-like suffix) and the masks no image claimed."""
    by_stem = {p.stem: p for p in mask_files}
    stripped: dict[str, Path] = {}
    for p in mask_files:
        for suffix in _MASK_SUFFIXES:
            if p.stem.lower().endswith(suffix) and len(p.stem) > len(suffix):
                stripped.setdefault(p.stem[: -len(suffix)], p)
    found = [by_stem.get(p.stem) or stripped.get(p.stem) for p in images]
    used = {m for m in found if m is not None}
    return found, [m for m in mask_files if m not in used]


class FolderSource:
    """Samples from a user's images/ and masks/ folders (see the module docstring)."""

    name = "folder"

    def __init__(
        self,
        root: str | Path,
        split: str = "all",
        num_classes: int | None = None,
        ignore_index: int | None = IGNORE_INDEX,
        mask_format: MaskFormat | dict[str, Any] | None = None,
        cache_dir: str | Path | None = None,
    ):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise SeglabError(f"folder dataset root does not exist or is not a folder: {root}")
        self.root = root
        self.split = split
        folders = split_folders(root)
        flat = _pair_dirs(root)
        stems_filter: str | None = None
        if split in folders:
            dirs = folders[split]
        elif folders and split in SPLIT_ALIASES and any(a in folders for a in SPLIT_ALIASES[split]):
            dirs = folders[next(a for a in SPLIT_ALIASES[split] if a in folders)]
        elif flat is not None:
            dirs = flat
            stems_filter = canonical_split(split)
            if stems_filter not in ("all", "train", "val"):
                raise SeglabError(f"folder split must be all, train or val (or a sub-folder of {root}), not {split!r}")
        elif folders:
            raise SeglabError(f"{root} has no split folder {split!r} (it has {', '.join(sorted(folders))}); choose "
                              "one of those with --train-split / --val-split")
        else:
            raise SeglabError(f"no images/ folder in {root} (nor in a split folder such as {root / 'train'}); expected "
                              "ROOT/images and ROOT/masks, or ROOT/train/images and ROOT/train/masks")
        self.image_dir, self.mask_dir = dirs
        if not self.mask_dir.is_dir():
            raise SeglabError(f"no masks/ folder beside {self.image_dir}: create {self.mask_dir} with one mask per "
                              "image (same file name, e.g. a PNG)")
        images = list_images(self.image_dir)
        if not images:
            raise SeglabError(f"no images in {self.image_dir} (looked for .jpg, .png, .bmp, .tif, .webp)")
        mask_files = list_images(self.mask_dir)
        for what, files, where in (("images", images, self.image_dir), ("masks", mask_files, self.mask_dir)):
            dup = sorted(stem for stem, n in Counter(p.stem for p in files).items() if n > 1)
            if dup:
                raise SeglabError(f"several {what} share the stem(s) {', '.join(dup[:5])} in {where}; "
                                  "keep one file per stem")
        found, orphans = _match_masks(images, mask_files)
        self.pairs: list[tuple[Path, Path | None]] = list(zip(images, found))
        # Masks without an image are reported, not fatal: they are simply not used.
        self.orphan_masks = [p.name for p in orphans]
        if orphans:
            shown = ", ".join(self.orphan_masks[:10])
            more = f" ... and {len(orphans) - 10} more" if len(orphans) > 10 else ""
            warnings.warn(f"{len(orphans)} mask(s) in {self.mask_dir} have no image in {self.image_dir} "
                          f"and are not used: {shown}{more}", stacklevel=2)
        if stems_filter in ("train", "val"):
            val = val_stems([p.stem for p in images])
            self.pairs = [pm for pm in self.pairs if (pm[0].stem in val) == (stems_filter == "val")]

        # The format is decided over every mask of the dataset (all splits), so train and val read alike.
        self.classes = self._classes(num_classes)
        if mask_format is not None:
            self.mask_format = mask_format if isinstance(mask_format, MaskFormat) else MaskFormat.from_dict(mask_format)
            self.scan: MaskScan | None = None
        else:
            all_masks = [m for _, d in [*folders.values(), *([flat] if flat else [])] if d.is_dir()
                         for m in list_images(d)]
            self.scan = scan_masks(all_masks, cache_dir=cache_dir)
            self.mask_format = detect_mask_format(self.scan, self.classes, ignore_index, where=str(root))
        self.class_names = self.mask_format.class_names

    def _classes(self, num_classes: int | None) -> ClassSpec | None:
        path = self.root / "classes.json"
        if path.exists():
            return read_classes_json(path)
        if num_classes is None:
            return None
        if not (isinstance(num_classes, int) and 1 <= num_classes <= 255):
            raise SeglabError(f"folder dataset: num_classes must be 1..255, not {num_classes!r}")
        return ClassSpec(tuple(f"class{i}" for i in range(num_classes)))

    def __len__(self) -> int:
        return len(self.pairs)

    def sample_id(self, i: int) -> str:
        return str(self.pairs[i][0])

    def describe(self, shares: list[float] | None = None) -> str:
        """The one-line summary of the masks, e.g. 'binary 0/255 -> background, foreground'."""
        return self.mask_format.describe(shares)

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"{self.class_names!r}:{self.mask_format.key()}".encode())
        for img, mask in self.pairs:
            for p in (img, mask):
                if p is not None:
                    try:
                        st = p.stat()
                        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns};".encode())
                    except OSError:  # vanished since it was listed: load() reports it
                        h.update(f"{p}:missing;".encode())
        return h.hexdigest()

    def load(self, i: int) -> tuple[Image.Image, np.ndarray]:
        img_path, mask_path = self.pairs[i]
        if mask_path is None:
            raise SeglabError(f"image has no mask: {img_path} (expected {self.mask_dir / (img_path.stem + '.png')})")
        return read_pair(img_path, mask_path, num_classes=self.mask_format.num_classes, reader=self.mask_format.read)


def val_stems(stems: list[str]) -> set[str]:
    """The validation side of the stable 80/20 split by name: a file's side depends on its name only (a hash),
    except that each side gets at least one file when there are two or more."""
    score = {s: int(hashlib.md5(s.encode()).hexdigest(), 16) % 1000 for s in stems}
    val = {s for s in stems if score[s] < _VAL_FRACTION * 1000}
    if len(stems) >= 2 and not val:
        val = {min(stems, key=lambda s: (score[s], s))}
    if len(stems) >= 2 and len(val) == len(stems):
        val.discard(max(stems, key=lambda s: (score[s], s)))
    return val
