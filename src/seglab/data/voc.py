"""Pascal VOC 2012 segmentation: download (download.py), layout, official splits, 21 classes, 255 = ignore.

Layout after extraction (the official archive's own folders):
    ROOT/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    ROOT/VOCdevkit/VOC2012/SegmentationClass/<id>.png         palette PNGs: index = class id, 255 = object borders
    ROOT/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt   one id per line
ROOT may also be the VOC2012 folder itself or the VOCdevkit folder. Nothing downloads unless asked
(download=True, `seglab data download voc`): VOCtrainval_11-May-2012.tar, about 2 GB, MD5-checked, resumable.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import SeglabError
from .cache import as_size, data_home, load_source
from .dataset import ImageStore, SegmentationDataset
from .download import fetch_archives
from .io import IGNORE_INDEX, check_interpolation, read_pair
from .masks import MaskFormat, fixed_format

VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012"
URL_ENV = "SEGLAB_VOC_URL"
ARCHIVE = "VOCtrainval_11-May-2012.tar"
ARCHIVE_MD5 = "6cd6e144f989b92b3379bac3b3de84fd"
SPLITS = ("train", "val", "trainval")
_BORDER = 255  # the palette index of object borders: ignore
CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
DEFAULT_FOLDER = "voc"


def voc_colour(i: int) -> tuple[int, int, int]:
    """The colour VOC's palette gives index i (the bits of i spread over R, G, B from the top bit down)."""
    r = g = b = 0
    for j in range(8):
        r |= ((i >> 0) & 1) << (7 - j)
        g |= ((i >> 1) & 1) << (7 - j)
        b |= ((i >> 2) & 1) << (7 - j)
        i >>= 3
    return r, g, b


def mask_format() -> MaskFormat:
    """VOC's masks: palette index = class id 0..20, 255 = ignore (object borders); masks saved as RGB images are
    read through VOC's colours (border colour 224, 224, 192 = ignore)."""
    values = {i: i for i in range(len(CLASS_NAMES))} | {_BORDER: IGNORE_INDEX}
    colors = {voc_colour(i): i for i in range(len(CLASS_NAMES))} | {voc_colour(_BORDER): IGNORE_INDEX}
    return fixed_format(CLASS_NAMES, values, "palette PNGs, index = class id (VOC 2012)", ignore_index=_BORDER,
                        colors=colors)


def find_voc_root(root: str | Path) -> Path | None:
    """The VOC2012 folder (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/) in or at root, or None."""
    root = Path(root).expanduser()
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir() and (candidate / "SegmentationClass").is_dir():
            return candidate  # ImageSets/Segmentation may be missing: then the split is 80/20 by name
    return None


def download_voc(root: str | Path | None = None, mirror: str | None = None, quiet: bool = False,
                 md5: str | None = None) -> Path:
    """Download and extract VOCtrainval_11-May-2012.tar into root (default data_home()/voc); return root.

    The base URL is `mirror`, else $SEGLAB_VOC_URL, else VOC_URL; md5 overrides the expected MD5.
    """
    root = Path(root).expanduser() if root is not None else data_home() / DEFAULT_FOLDER
    base = mirror or os.environ.get(URL_ENV) or VOC_URL
    fetch_archives({ARCHIVE: (md5 or ARCHIVE_MD5).lower()}, root, base, URL_ENV, quiet=quiet, space="4 GB")
    return root


class VOCSource:
    """The samples of one split (train, val or trainval) of an extracted VOC 2012 folder."""

    name = "voc"
    class_names = CLASS_NAMES

    def __init__(self, root: str | Path, split: str):
        if split not in SPLITS:
            raise SeglabError(f"voc has no split {split!r}; choose one of: {', '.join(SPLITS)}")
        self.root = Path(root)
        self.split = split
        self.mask_format = mask_format()
        self.split_file = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        try:
            if not self.split_file.parent.is_dir():  # no split lists: every mask, 80/20 by name like a folder
                from .folders import val_stems
                from .io import list_images

                stems = [p.stem for p in list_images(self.root / "SegmentationClass")]
                val = val_stems(stems)
                keep = [s for s in stems if split == "trainval" or (s in val) == (split == "val")]
                self.split_file = self.root / "SegmentationClass"
                self._split_text = "\n".join(keep) + "\n"
            else:
                self._split_text = self.split_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SeglabError(f"split file not found: {self.split_file}. Point --data-root at an extracted VOC 2012 "
                              "(VOCdevkit/VOC2012) or run `seglab data download voc`.") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SeglabError(f"cannot read the split file {self.split_file} ({e})") from None
        self.names = []
        for lineno, line in enumerate(self._split_text.splitlines(), 1):
            name = line.strip().split()[0] if line.strip() else ""
            if not name:
                continue
            if "/" in name or "\\" in name or name in (".", ".."):
                raise SeglabError(f"{self.split_file} line {lineno}: {name!r} is not an image id")
            self.names.append(name)
        if not self.names:
            raise SeglabError(f"the split file {self.split_file} lists no images")

    def image_path(self, i: int) -> Path:
        return self.root / "JPEGImages" / f"{self.names[i]}.jpg"

    def mask_path(self, i: int) -> Path:
        return self.root / "SegmentationClass" / f"{self.names[i]}.png"

    def __len__(self) -> int:
        return len(self.names)

    def sample_id(self, i: int) -> str:
        return self.names[i]

    def describe(self, shares: list[float] | None = None) -> str:
        return self.mask_format.describe(shares)

    def load(self, i: int) -> tuple[Image.Image, np.ndarray]:
        for path, what in ((self.image_path(i), "image"), (self.mask_path(i), "mask")):
            if not path.is_file():
                raise SeglabError(f"voc {self.split}: {self.names[i]} is listed in {self.split_file} but its {what} "
                                  f"{path} is missing")
        return read_pair(self.image_path(i), self.mask_path(i), num_classes=len(CLASS_NAMES),
                         reader=self.mask_format.read)

    def fingerprint(self) -> str:
        h = hashlib.sha256(self._split_text.encode("utf-8"))
        h.update(self.mask_format.key().encode())
        for i in range(len(self.names)):
            for path in (self.image_path(i), self.mask_path(i)):
                try:
                    st = path.stat()
                    h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
                except OSError:
                    h.update(f"{path.name}:missing\n".encode())
        return h.hexdigest()


def voc_source(split: str, root: str | Path | None = None, download: bool = False, mirror: str | None = None,
               quiet: bool = False, md5: str | None = None) -> VOCSource:
    """The VOCSource of a split, found in root (default data_home()/voc), downloaded there first if asked."""
    if split not in SPLITS:
        raise SeglabError(f"voc has no split {split!r}; choose one of: {', '.join(SPLITS)}")
    given = Path(root).expanduser() if root is not None else data_home() / DEFAULT_FOLDER
    found = find_voc_root(given)
    if found is None:
        if not download:
            raise SeglabError(
                f"Pascal VOC 2012 not found in {given} (looked for JPEGImages/, SegmentationClass/ and "
                "ImageSets/Segmentation/ there, in VOC2012/ and in VOCdevkit/VOC2012/). Get it with "
                "`seglab data download voc` (about 2 GB), or add --download, or point --data-root at an extracted "
                "copy."
            )
        download_voc(given, mirror=mirror, quiet=quiet, md5=md5)
        found = find_voc_root(given)
        if found is None:
            raise SeglabError(f"the VOC archive was extracted into {given} but VOCdevkit/VOC2012 with JPEGImages/, "
                              "SegmentationClass/ and ImageSets/Segmentation/ is not there; it is not the official one")
    return VOCSource(found, split)


def build_voc(
    split: str,
    root: str | Path | None = None,
    download: bool = False,
    image_size: int | tuple[int, int] | None = (128, 128),
    interpolation: str = "bilinear",
    mirror: str | None = None,
    cache_dir: str | Path | None = None,
    skip_bad: bool = False,
    quiet: bool = False,
    max_side: int | None = None,
    md5: str | None = None,
) -> SegmentationDataset | ImageStore:
    """Load a split (train, val, trainval) of Pascal VOC 2012 resized to image_size, as a SegmentationDataset
    (image_size None: at its own size, long side capped at max_side, as an ImageStore)."""
    size = as_size(image_size)
    check_interpolation(interpolation)  # now, not after a 2 GB download
    source = voc_source(split, root, download=download, mirror=mirror, quiet=quiet, md5=md5)
    return load_source(source, size, interpolation, max_side, cache_dir=cache_dir, skip_bad=skip_bad,
                       quiet=quiet)


__all__ = ["ARCHIVE", "ARCHIVE_MD5", "CLASS_NAMES", "VOCSource", "build_voc", "download_voc", "find_voc_root"]
