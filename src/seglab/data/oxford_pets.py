"""Oxford-IIIT Pet: download (resumable, retried, MD5-checked), safe extraction, official splits, trimaps.

Layout after extraction (the official archives' own folders):
    ROOT/images/<Name>.jpg
    ROOT/annotations/trimaps/<Name>.png        1 = pet, 2 = background, 3 = border
    ROOT/annotations/{trainval,test,list}.txt  'Name classid species breedid' per line, '#' comments
Trimap values become class ids 0 (pet), 1 (background), 2 (border), the article's "trimap - 1".

Nothing downloads unless asked (download=True, `seglab data download oxford-pets`). The download uses only
urllib: a partial file NAME.part is resumed with an HTTP Range request, transient errors are retried with
backoff, the MD5 is checked before the archive gets its final name, and every tar member is checked before
it is written (no absolute paths, no '..', no links leading out, no devices) into a temporary folder that
is renamed into place; a stamp file marks a finished extraction so a killed one is redone.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import SeglabError
from .cache import as_size, data_home, load_source
from .dataset import ImageStore, SegmentationDataset
from .download import fetch_archives
from .io import check_interpolation, read_pair
from .masks import fixed_format


OXFORD_PETS_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/data"
URL_ENV = "SEGLAB_OXFORD_PETS_URL"
# The two official archives and their MD5s (the same as torchvision's OxfordIIITPet).
ARCHIVES: dict[str, str] = {
    "images.tar.gz": "5c4f3ee8e5d25df40f4fd59a7f44e54c",
    "annotations.tar.gz": "95a8c909bbe2e81eed6a22bccdf3f68f",
}
SPLITS = ("trainval", "test")
CLASS_NAMES = ("pet", "background", "border")
TRIMAP_TO_CLASS = {1: 0, 2: 1, 3: 2}
DEFAULT_FOLDER = "oxford-iiit-pet"


def download_oxford_pets(
    root: str | Path | None = None,
    mirror: str | None = None,
    quiet: bool = False,
    md5s: Mapping[str, str] | None = None,
) -> Path:
    """Download and extract images.tar.gz and annotations.tar.gz into root; return root.

    root defaults to data_home()/"oxford-iiit-pet". The base URL is `mirror`, else $SEGLAB_OXFORD_PETS_URL,
    else OXFORD_PETS_URL. md5s overrides the expected MD5 of an archive by file name. An archive already
    extracted (its stamp file is there) or already downloaded with the right MD5 is not downloaded again.
    """
    root = Path(root).expanduser() if root is not None else data_home() / DEFAULT_FOLDER
    base = mirror or os.environ.get(URL_ENV) or OXFORD_PETS_URL
    expected = dict(ARCHIVES)
    for name, md5 in (md5s or {}).items():
        if name not in ARCHIVES:
            raise SeglabError(
                f"md5s names an unknown archive {name!r}; the archives are {', '.join(ARCHIVES)}"
            )
        expected[name] = str(md5).lower()
    fetch_archives(expected, root, base, URL_ENV, quiet=quiet, space="1.6 GB")
    return root


# ------------------------------------------------------------------------------------------------ the source


def find_root(root: str | Path) -> Path | None:
    """The folder holding images/, annotations/trimaps/ and annotations/trainval.txt.

    That is root itself or root/oxford-iiit-pet (torchvision's layout); None when neither holds them.
    """
    root = Path(root).expanduser()
    for candidate in (root, root / DEFAULT_FOLDER):
        if (
            (candidate / "images").is_dir()
            and (candidate / "annotations" / "trimaps").is_dir()
            and (candidate / "annotations" / "trainval.txt").is_file()
        ):
            return candidate
    return None


class OxfordPetsSource:
    """The samples of one official split (trainval or test) of an extracted Oxford-IIIT Pet folder."""

    name = "oxford-pets"
    class_names = CLASS_NAMES
    mask_format = fixed_format(CLASS_NAMES, TRIMAP_TO_CLASS, "Oxford-IIIT Pet trimaps 1/2/3")

    def describe(self, shares: list[float] | None = None) -> str:
        return self.mask_format.describe(shares)

    def __init__(self, root: str | Path, split: str):
        if split not in SPLITS:
            raise SeglabError(f"oxford-pets has no split {split!r}; choose one of: {', '.join(SPLITS)}")
        self.root = Path(root).expanduser()
        self.split = split
        self.split_file = self.root / "annotations" / f"{split}.txt"
        try:
            self._split_text = self.split_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SeglabError(
                f"split file not found: {self.split_file}. Point --data-root at an extracted Oxford-IIIT Pet "
                "(images/ and annotations/) or run `seglab data download oxford-pets`."
            ) from None
        except (OSError, UnicodeDecodeError) as e:
            raise SeglabError(f"cannot read the split file {self.split_file} ({e})") from None
        self.names: list[str] = []
        for lineno, line in enumerate(self._split_text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name = line.split()[0]
            # The name becomes a file path: keep it inside images/ and trimaps/.
            if "/" in name or "\\" in name or name in (".", ".."):
                raise SeglabError(f"{self.split_file} line {lineno}: {name!r} is not an image name")
            self.names.append(name)
        if not self.names:
            raise SeglabError(
                f"the split file {self.split_file} lists no images. Restore it from annotations.tar.gz (or run "
                "`seglab data download oxford-pets` into an empty folder)."
            )

    def image_path(self, i: int) -> Path:
        return self.root / "images" / f"{self.names[i]}.jpg"

    def trimap_path(self, i: int) -> Path:
        return self.root / "annotations" / "trimaps" / f"{self.names[i]}.png"

    def __len__(self) -> int:
        return len(self.names)

    def sample_id(self, i: int) -> str:
        return self.names[i]

    def load(self, i: int) -> tuple[Image.Image, np.ndarray]:
        """The RGB image and its trimap as class ids 0 pet, 1 background, 2 border."""
        image_path, trimap_path = self.image_path(i), self.trimap_path(i)
        for path, what in ((image_path, "image"), (trimap_path, "trimap")):
            if not path.is_file():
                raise SeglabError(
                    f"oxford-pets {self.split}: {self.names[i]} is listed in {self.split_file} but its "
                    f"{what} {path} is missing"
                )
        return read_pair(image_path, trimap_path, num_classes=len(CLASS_NAMES), value_map=TRIMAP_TO_CLASS,
                         ignore_values=())

    def fingerprint(self) -> str:
        """A hash of the split file and the size and modification time of every listed image and trimap."""
        h = hashlib.sha256(self._split_text.encode("utf-8"))
        for i in range(len(self.names)):
            for path in (self.image_path(i), self.trimap_path(i)):
                try:
                    st = path.stat()
                    h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
                except OSError:
                    h.update(f"{path.name}:missing\n".encode())
        return h.hexdigest()


def build_oxford_pets(
    split: str,
    root: str | Path | None = None,
    download: bool = False,
    image_size: int | tuple[int, int] | None = (128, 128),
    interpolation: str = "nearest",
    mirror: str | None = None,
    cache_dir: str | Path | None = None,
    skip_bad: bool = False,
    quiet: bool = False,
    md5s: Mapping[str, str] | None = None,
    max_side: int | None = None,
) -> SegmentationDataset | ImageStore:
    """Load a split (trainval or test) of Oxford-IIIT Pet, resized to image_size, as a SegmentationDataset
    (image_size None: at its own size, long side capped at max_side, as an ImageStore).

    root is an extracted copy (root itself or root/oxford-iiit-pet; default data_home()/oxford-iiit-pet),
    used as is. When none is there, download=True downloads it into root (see download_oxford_pets);
    otherwise a SeglabError says how to get it.
    """
    if split not in SPLITS:
        raise SeglabError(f"oxford-pets has no split {split!r}; choose one of: {', '.join(SPLITS)}")
    size = as_size(image_size)
    check_interpolation(interpolation)  # now, not after an 800 MB download
    given = Path(root).expanduser() if root is not None else data_home() / DEFAULT_FOLDER
    found = find_root(given)
    if found is None:
        if not download:
            raise SeglabError(
                f"Oxford-IIIT Pet not found in {given} (looked for images/, annotations/trimaps/ and "
                f"annotations/trainval.txt there and in {given / DEFAULT_FOLDER}). Get it with "
                "`seglab data download oxford-pets` (about 800 MB), or add --download, or point --data-root "
                "at an extracted copy."
            )
        download_oxford_pets(given, mirror=mirror, quiet=quiet, md5s=md5s)
        found = find_root(given)
        if found is None:
            raise SeglabError(
                f"the Oxford-IIIT Pet archives were extracted into {given} but images/, annotations/trimaps/ "
                "or annotations/trainval.txt is missing there; the archives are not the official ones"
            )
    return load_source(OxfordPetsSource(found, split), size, interpolation, max_side, cache_dir=cache_dir,
                       skip_bad=skip_bad, quiet=quiet)


__all__ = [
    "ARCHIVES",
    "OXFORD_PETS_URL",
    "OxfordPetsSource",
    "build_oxford_pets",
    "download_oxford_pets",
    "find_root",
]
