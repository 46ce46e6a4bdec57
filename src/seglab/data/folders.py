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
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import SeglabError
from .io import list_images, read_image, read_mask

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
            raise SeglabError(f"no masks/ folder beside {self.image_dir}: create {self.mask_dir} with one PNG per image")
        images = list_images(self.image_dir)
        if not images:
            raise SeglabError(f"no images in {self.image_dir} (looked for .jpg, .png, .bmp, .tif, .webp)")
        masks = {p.stem: p for p in list_images(self.mask_dir)}
        dup = sorted(stem for stem, n in Counter(p.stem for p in images).items() if n > 1)
        if dup:
            raise SeglabError(f"several images share the stem(s) {', '.join(dup[:5])} in {self.image_dir}")
        self.pairs: list[tuple[Path, Path | None]] = [(p, masks.get(p.stem)) for p in images]
        self.orphan_masks = sorted(set(masks) - {p.stem for p in images})
        if stems_filter in ("train", "val", "trainval", "test"):
            want_val = stems_filter in ("val", "test")
            self.pairs = [pm for pm in self.pairs if _is_val(pm[0].stem) == want_val]
        self.class_names = self._class_names(num_classes)

    def _class_names(self, num_classes: int | None) -> tuple[str, ...]:
        path = self.root / "classes.json"
        if path.exists():
            try:
                names = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise SeglabError(f"classes.json is not valid JSON ({e}): {path}") from None
            if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
                raise SeglabError(f"classes.json must be a JSON list of class names: {path}")
            return tuple(names)
        if num_classes is None:
            top = 0
            for _, m in self.pairs:
                if m is not None:
                    with Image.open(m) as im:
                        vals = np.asarray(im)
                    vals = vals[vals != 255]
                    top = max(top, int(vals.max()) if vals.size else 0)
            num_classes = top + 1
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
                    st = p.stat()
                    h.update(f"{p}:{st.st_size}:{st.st_mtime_ns};".encode())
        return h.hexdigest()

    def load(self, i: int) -> tuple[Image.Image, np.ndarray]:
        img_path, mask_path = self.pairs[i]
        if mask_path is None:
            raise SeglabError(f"image has no mask: {img_path} (expected {self.mask_dir / (img_path.stem + '.png')})")
        image = read_image(img_path)
        mask = read_mask(mask_path, num_classes=len(self.class_names))
        return image, mask


def _is_val(stem: str) -> bool:
    # A stable split by name: the same file is always on the same side, whatever else is in the folder.
    return int(hashlib.md5(stem.encode()).hexdigest(), 16) % 1000 < _VAL_FRACTION * 1000
