"""A user's own data: images/ and masks/ folders with matching file stems, class ids in PNG masks.

Layout (either):
    ROOT/images/*.jpg|png...   ROOT/masks/<stem>.png           (split "all"; "train"/"val" hold out 20% by name)
    ROOT/<split>/images/...    ROOT/<split>/masks/...          (explicit splits, e.g. train/ and val/)
An optional ROOT/classes.json names the classes: ["background", "cat", ...]; else num_classes is inferred
from the largest mask value and the classes are named class0, class1, ...
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import SeglabError
from .io import list_images, read_mask, read_pair

_VAL_FRACTION = 0.2


class FolderSource:
    """Samples from a user's images/ and masks/ folders (see the module docstring)."""

    name = "folder"

    def __init__(self, root: str | Path, split: str = "all", num_classes: int | None = None):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise SeglabError(f"folder dataset root does not exist or is not a folder: {root}")
        self.root = root
        self.split = split
        if (root / split / "images").is_dir():
            base = root / split
            stems_filter = None
        elif (root / "images").is_dir():
            base = root
            if split not in ("all", "train", "val", "trainval", "test"):
                raise SeglabError(f"folder split must be all, train or val (or a subfolder of {root}), not {split!r}")
            stems_filter = split
        else:
            raise SeglabError(
                f"no images/ folder in {root} (nor {root / split / 'images'}); expected ROOT/images and ROOT/masks"
            )
        self.image_dir, self.mask_dir = base / "images", base / "masks"
        if not self.mask_dir.is_dir():
            raise SeglabError(
                f"no masks/ folder beside {self.image_dir}: create {self.mask_dir} with one PNG per image"
            )
        images = list_images(self.image_dir)
        if not images:
            raise SeglabError(f"no images in {self.image_dir} (looked for .jpg, .png, .bmp, .tif, .webp)")
        mask_files = list_images(self.mask_dir)
        for what, files, where in (("images", images, self.image_dir), ("masks", mask_files, self.mask_dir)):
            dup = sorted(stem for stem, n in Counter(p.stem for p in files).items() if n > 1)
            if dup:
                raise SeglabError(f"several {what} share the stem(s) {', '.join(dup[:5])} in {where}; "
                                  "keep one file per stem")
        masks = {p.stem: p for p in mask_files}
        self.pairs: list[tuple[Path, Path | None]] = [(p, masks.get(p.stem)) for p in images]
        # Masks without an image are reported, not fatal: they are simply not used.
        self.orphan_masks = sorted(set(masks) - {p.stem for p in images})
        if self.orphan_masks:
            shown = ", ".join(masks[s].name for s in self.orphan_masks[:10])
            more = f" ... and {len(self.orphan_masks) - 10} more" if len(self.orphan_masks) > 10 else ""
            warnings.warn(f"{len(self.orphan_masks)} mask(s) in {self.mask_dir} have no image in {self.image_dir} "
                          f"and are not used: {shown}{more}", stacklevel=2)
        if stems_filter in ("train", "val", "trainval", "test"):
            want_val = stems_filter in ("val", "test")
            self.pairs = [pm for pm in self.pairs if _is_val(pm[0].stem) == want_val]
        self.class_names = self._class_names(num_classes)

    def _class_names(self, num_classes: int | None) -> tuple[str, ...]:
        path = self.root / "classes.json"
        if path.exists():
            try:
                names = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise SeglabError(f"classes.json is not valid JSON ({e}): {path}") from None
            except OSError as e:
                raise SeglabError(f"cannot read {path} ({e})") from None
            if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
                raise SeglabError(f"classes.json must be a JSON list of class names: {path}")
            if len(names) > 255:
                raise SeglabError(
                    f"classes.json names {len(names)} classes; at most 255 (ids 0..254, 255 = ignore): {path}"
                )
            return tuple(names)
        if num_classes is None:
            top = 0
            for _, m in self.pairs:
                if m is not None:
                    try:
                        vals = read_mask(m, num_classes=255)  # any 8-bit class id; 255 = ignore
                    except SeglabError:
                        continue  # a bad mask is reported (or skipped with skip_bad) when its sample is loaded
                    vals = vals[vals != 255]
                    top = max(top, int(vals.max()) if vals.size else 0)
            num_classes = top + 1
        elif not (isinstance(num_classes, int) and 1 <= num_classes <= 255):
            raise SeglabError(f"folder dataset: num_classes must be 1..255, not {num_classes!r}")
        return tuple(f"class{i}" for i in range(num_classes))

    def __len__(self) -> int:
        return len(self.pairs)

    def sample_id(self, i: int) -> str:
        return str(self.pairs[i][0])

    def fingerprint(self) -> str:
        h = hashlib.sha256(repr(self.class_names).encode())
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
        return read_pair(img_path, mask_path, num_classes=len(self.class_names))


def _is_val(stem: str) -> bool:
    # A stable split by name: the same file is always on the same side, whatever else is in the folder.
    return int(hashlib.md5(stem.encode()).hexdigest(), 16) % 1000 < _VAL_FRACTION * 1000
