"""The dataset registry: build_dataset(name, split, root=..., download=False, ...).

Every dataset goes the same way: a source (files on disk or a generator) is decoded and resized once into a
uint8 cache (cache.py), then held in memory as a SegmentationDataset; augmentation runs batched on the
training device (augment.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SeglabError, check_known
from .splits import DEFAULT_SPLITS, canonical_split

if TYPE_CHECKING:
    from .dataset import ImageStore, SegmentationDataset, SegmentationSource


# torch is imported on use (cache.py, dataset.py): `seglab.data.io` must load without torch, for runtime.py.
def __getattr__(name: str) -> Any:
    if name in ("SegmentationDataset", "ImageStore"):
        from . import dataset

        return getattr(dataset, name)
    if name == "data_home":
        from .cache import data_home

        return data_home
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

DATASETS = ("oxford-pets", "folder", "voc", "synthetic")


def build_dataset(
    name: str,
    split: str,
    root: str | Path | None = None,
    download: bool = False,
    image_size: int | tuple[int, int] | None = 128,
    interpolation: str = "nearest",
    cache_dir: str | Path | None = None,
    skip_bad: bool = False,
    quiet: bool = False,
    max_side: int | None = None,
    **options: Any,
) -> SegmentationDataset | ImageStore:
    """Load a split of a named dataset, resized to image_size, as uint8 tensors held in memory; with
    image_size=None, at each image's own size (long side capped at max_side) as a memory-mapped ImageStore.

    name: "oxford-pets" (splits trainval, test; options: mirror), "folder" (root required; splits all, train,
    val or a sub-folder; options: num_classes, ignore_index, mask_format), "voc" (splits train, val, trainval;
    options: mirror, md5) or "synthetic" (splits train, val; options: count, seed, size: the generated side).
    A "folder" root laid out as Pascal VOC (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/) is read as "voc".
    interpolation applies to images ("nearest" is the article's recipe); masks are always resized by nearest.
    """
    from .cache import as_size, load_source

    size = as_size(image_size)
    if name == "oxford-pets":
        from .oxford_pets import build_oxford_pets

        return build_oxford_pets(split, root=root, download=download, image_size=size, interpolation=interpolation,
                                 cache_dir=cache_dir, skip_bad=skip_bad, quiet=quiet, max_side=max_side, **options)
    if name == "voc" or (name == "folder" and root is not None and _is_voc(root)):
        from .voc import build_voc

        unknown = set(options) - {"mirror", "md5", "ignore_index", "mask_format"}
        if unknown:
            raise SeglabError(f"unknown option(s) for voc: {', '.join(sorted(unknown))}")
        vsplit = split
        if name == "folder":  # a folder's split names in VOC's: all (and trainval) -> trainval, test -> val, ...
            vsplit = "trainval" if split in ("all", "trainval") else canonical_split(split)
        return build_voc(vsplit, root=root, download=download, image_size=size, interpolation=interpolation,
                         cache_dir=cache_dir, skip_bad=skip_bad, quiet=quiet, mirror=options.get("mirror"),
                         md5=options.get("md5"), max_side=max_side)
    if name == "folder":
        from .folders import FolderSource

        if root is None:
            raise SeglabError("the folder dataset needs a root: --data-root PATH (a folder with images/ and masks/)")
        source: SegmentationSource = FolderSource(root, split, cache_dir=_cache_root(cache_dir), **options)
    elif name == "synthetic":
        from .synthetic import SyntheticSource

        check_known(options, ("count", "seed", "border", "size"), " for synthetic")
        count = options.get("count", 512 if split in ("train", "trainval") else 128)
        side = options.get("size") or max(size or (128,))
        source = SyntheticSource(split, count=count, size=side, seed=options.get("seed", 0),
                                 border=options.get("border"))
    else:
        raise SeglabError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return load_source(source, size, interpolation, max_side, cache_dir=cache_dir, skip_bad=skip_bad, quiet=quiet)


def _is_voc(root: str | Path) -> bool:
    from .voc import find_voc_root

    return find_voc_root(root) is not None


def _cache_root(cache_dir: str | Path | None) -> Path:
    from .cache import data_home

    return Path(cache_dir) if cache_dir is not None else data_home() / "cache"


__all__ = ["DATASETS", "DEFAULT_SPLITS", "ImageStore", "SegmentationDataset", "build_dataset", "data_home"]
