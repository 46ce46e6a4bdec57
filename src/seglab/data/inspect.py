"""inspect_dataset(): what a dataset holds and how seglab reads it, the report behind `seglab data inspect`.

Per split: images and masks, image sizes (min / median / max), the detected mask format, the pixel share of every
class, images without masks and masks without images, size mismatches, classes that never occur, files that fail
to decode; the pre-flight checks training runs (checks.py); and a preview PNG (images with their masks overlaid,
and a legend of class names and colours). It reads through the same dataset cache as training, so a second call
(or the training run after it) does not decode the files again.
"""

from __future__ import annotations

import json
import warnings as warnings_module
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import SeglabError
from . import DATASETS, build_dataset
from .cache import data_home
from .checks import check_splits
from .dataset import SegmentationDataset
from .splits import DEFAULT_SPLITS, SPLIT_ALIASES

_PREVIEW = 16  # images in the preview grid


@dataclass
class SplitReport:
    """What one split holds."""

    split: str
    images: int
    masks: int
    loaded: int  # samples that decoded and entered the cache
    sizes: dict[str, list[int]]  # "min" / "median" / "max" -> [W, H] (by area)
    pixel_share: dict[str, float]  # class name -> share of the labelled pixels
    ignored_share: float  # share of all pixels that are ignore
    absent: list[str]  # classes that never occur
    images_without_masks: list[str] = field(default_factory=list)
    masks_without_images: list[str] = field(default_factory=list)
    size_mismatches: list[str] = field(default_factory=list)
    bad_files: list[list[str]] = field(default_factory=list)  # [file, why]


@dataclass
class InspectReport:
    """inspect_dataset()'s answer: render() is the text `seglab data inspect` prints; problems decide --strict."""

    dataset: str
    root: str | None
    masks: str  # the detected mask format, one line
    mask_format: dict[str, Any] | None
    class_names: list[str]
    splits: list[SplitReport]
    problems: list[str]
    warnings: list[str]
    preview: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    def render(self) -> str:
        lines = [f"dataset: {self.dataset}" + (f" at {self.root}" if self.root else ""), f"masks: {self.masks}"]
        lines.append(f"classes ({len(self.class_names)}): {', '.join(self.class_names)}")
        for s in self.splits:
            size = " / ".join(f"{w}x{h}" for w, h in (s.sizes[k] for k in ("min", "median", "max"))) if s.sizes else "-"
            lines.append(f"split {s.split}: {s.images} images, {s.masks} masks, {s.loaded} readable pairs; "
                         f"sizes (WxH) min / median / max {size}")
            share = ", ".join(f"{n} {_pct(v)}" for n, v in s.pixel_share.items())
            lines.append(f"  pixels: {share}; ignored {_pct(s.ignored_share)}")
            for what, items in (("images without masks", s.images_without_masks),
                                ("masks without images", s.masks_without_images),
                                ("size mismatches", s.size_mismatches),
                                ("classes never occurring", s.absent)):
                if items:
                    lines.append(f"  {what} ({len(items)}): {_first(items)}")
            for f, why in s.bad_files[:5]:
                lines.append(f"  unreadable: {f}: {why}")
            if len(s.bad_files) > 5:
                lines.append(f"  ... and {len(s.bad_files) - 5} more unreadable file(s)")
        lines += [f"problem: {p}" for p in self.problems] or ["problems: none"]
        lines += [f"warning: {w}" for w in self.warnings]
        if self.preview:
            lines.append(f"preview: {self.preview}")
        return "\n".join(lines)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%" if x >= 0.001 or x == 0 else f"{100 * x:.3f}%"


def _first(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" ... and {len(items) - n} more" if len(items) > n else "")


def _resolve(target: str | Path, dataset: str | None) -> tuple[str, Path | None]:
    """(dataset name, root) from `seglab data inspect DATASET_OR_FOLDER [--dataset D]`."""
    if dataset is None and str(target) in DATASETS and not Path(target).exists():
        return str(target), None
    root = Path(target).expanduser()
    if not root.exists():
        raise SeglabError(f"no dataset named {str(target)!r} ({', '.join(DATASETS)}) and no folder {root}")
    if dataset is not None:
        if dataset not in DATASETS:
            raise SeglabError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
        return dataset, root
    from .oxford_pets import find_root
    from .voc import find_voc_root

    if find_voc_root(root) is not None:
        return "voc", root
    if find_root(root) is not None:
        return "oxford-pets", root
    return "folder", root


def _splits(name: str, root: Path | None) -> list[str]:
    if name == "folder" and root is not None:
        from .folders import split_folders

        found = sorted(split_folders(root))
        return found or list(DEFAULT_SPLITS["folder"])
    return list(DEFAULT_SPLITS[name])


def _source(name: str, split: str, root: Path | None, cache_dir: Path) -> Any:
    """The dataset's source for one split (file lists, mask scan), or None for generated data."""
    if name == "folder":
        from .folders import FolderSource

        return FolderSource(root, split, cache_dir=cache_dir)
    if name == "oxford-pets":
        from .oxford_pets import DEFAULT_FOLDER, OxfordPetsSource, find_root

        found = find_root(root if root is not None else data_home() / DEFAULT_FOLDER)
        return OxfordPetsSource(found, split) if found is not None else None
    if name == "voc":
        from .voc import voc_source

        return voc_source(split, root)
    return None


def _pairs(source: Any) -> list[tuple[Path, Path | None]]:
    if source is None:
        return []
    if hasattr(source, "pairs"):
        return list(source.pairs)
    mask_of = getattr(source, "mask_path", None) or source.trimap_path
    return [(source.image_path(i), mask_of(i)) for i in range(len(source))]


def _header_size(path: Path) -> tuple[int, int] | None:
    """(W, H) as displayed (EXIF orientation 5-8 swaps them) from the file header, or None when unreadable."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            try:
                if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                    w, h = h, w
            except Exception:  # noqa: BLE001 - a broken EXIF block: keep the stored size
                pass
            return w, h
    except Exception:  # noqa: BLE001 - reported through the dataset load as an unreadable file
        return None


def inspect_dataset(
    target: str | Path,
    dataset: str | None = None,
    out: str | Path | None = None,
    image_size: int | tuple[int, int] = 128,
    interpolation: str = "nearest",
    cache_dir: str | Path | None = None,
    splits: list[str] | None = None,
    quiet: bool = True,
) -> InspectReport:
    """Inspect a dataset (a name such as "oxford-pets", or a folder) and, with out, write preview.png and
    report.json there. See the module docstring for what it reports; report.problems decides --strict."""
    name, root = _resolve(target, dataset)
    cache = Path(cache_dir) if cache_dir is not None else data_home() / "cache"
    split_names = splits or _splits(name, root)
    reports: list[SplitReport] = []
    loaded: dict[str, SegmentationDataset] = {}
    problems: list[str] = []
    warnings: list[str] = []
    fmt = None
    for split in split_names:
        try:
            with warnings_module.catch_warnings():
                warnings_module.simplefilter("ignore")  # orphan masks are reported below, not warned about
                source = _source(name, split, root, cache)
                ds = build_dataset(name, split, root=root, image_size=image_size, interpolation=interpolation,
                                   cache_dir=cache, skip_bad=True, quiet=quiet)
        except SeglabError as e:
            problems.append(f"split {split}: {e}")
            continue
        pairs = _pairs(source)
        loaded[split] = ds
        fmt = ds.mask_format
        counts = ds.pixel_counts()
        labelled = sum(counts)
        total = labelled + ds.ignored_pixels()
        masks_listed = [m for _, m in pairs if m is not None and m.exists()]
        scan = getattr(source, "scan", None)
        mismatches, sizes = [], []
        for img, mask in pairs:
            isz = _header_size(img) if img.exists() else None
            if isz is None:
                continue
            sizes.append(isz)
            if mask is None or not mask.exists():
                continue
            msz = scan.sizes.get(str(mask)) if scan is not None else None
            msz = msz or _header_size(mask)
            if msz is not None and tuple(msz) != isz and tuple(msz) != isz[::-1]:
                mismatches.append(f"{img.name} {isz[0]}x{isz[1]} vs mask {msz[0]}x{msz[1]}")
        by_area = sorted(sizes, key=lambda s: (s[0] * s[1], s))
        size_stats = ({"min": list(by_area[0]), "median": list(by_area[len(by_area) // 2]), "max": list(by_area[-1])}
                      if by_area else {})
        bad = [[Path(f).name if name != "folder" else str(f), why] for f, why in ds.skipped
               if "has no mask" not in why]
        report = SplitReport(
            split=split,
            images=len(pairs) if pairs else len(ds) + len(ds.skipped),
            masks=len(masks_listed) if pairs else len(ds) + len(ds.skipped),
            loaded=len(ds),
            sizes=size_stats,
            pixel_share={n: (c / labelled if labelled else 0.0) for n, c in zip(ds.class_names, counts)},
            ignored_share=(total - labelled) / total if total else 0.0,
            absent=[n for n, c in zip(ds.class_names, counts) if c == 0],
            images_without_masks=[p.name for p, m in pairs if m is None or not m.exists()],
            masks_without_images=list(getattr(source, "orphan_masks", [])),
            size_mismatches=mismatches,
            bad_files=bad,
        )
        reports.append(report)
        orphans = [] if any(r.masks_without_images == report.masks_without_images for r in reports[:-1]) \
            else report.masks_without_images  # a flat folder's orphans belong to both of its 80/20 splits
        for what, items in (("image(s) without a mask", report.images_without_masks),
                            ("mask(s) without an image", orphans),
                            ("image/mask size mismatch(es)", report.size_mismatches)):
            if items:
                problems.append(f"split {split}: {len(items)} {what}: {_first(items, 3)}")
        if bad:
            problems.append(f"split {split}: {len(bad)} file(s) fail to decode or read: {bad[0][0]} ({bad[0][1]})")
    if fmt is not None:
        for v, (files, example) in sorted(fmt.stray.items()):
            problems.append(f"stray mask value {v} in {files} file(s) (e.g. {example}) is read as ignore; fix those "
                            "masks")
        if fmt.snap and fmt.snapped:
            warnings.append(f"JPEG masks: {fmt.snapped:,} pixels snapped to the class values; PNG masks avoid it")
        for note in fmt.notes:
            warnings.append(f"mask values: {note}")
    if not loaded and problems:  # nothing could be read at all (no such dataset there): an error, not a report
        raise SeglabError(problems[0].split(": ", 1)[1] if problems[0].startswith("split ") else problems[0])
    train_name, val_name = _train_val(name, split_names)
    if train_name in loaded:
        errs, warns = check_splits(loaded[train_name], loaded.get(val_name))
        problems += errs
        warnings += warns
    for r in reports:
        if r.split != train_name and r.absent and r.loaded:
            warnings.append(f"split {r.split}: class(es) {', '.join(r.absent)} never occur: their metrics show n/a")
    first = next(iter(loaded.values()), None)
    report = InspectReport(
        dataset=name,
        root=str(root) if root is not None else None,
        masks=first.describe_masks().split("; train pixels")[0] if first is not None else "not read",
        mask_format=fmt.to_dict() if fmt is not None else None,
        class_names=list(first.class_names) if first is not None else [],
        splits=reports,
        problems=problems,
        warnings=warnings,
    )
    if first is not None and fmt is not None:
        report.masks = fmt.describe()
    if out is not None and first is not None:
        out = Path(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            preview_image(loaded.get(train_name) or first).save(out / "preview.png")
            report.preview = str(out / "preview.png")
            (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
        except OSError as e:
            raise SeglabError(f"cannot write the inspection into {out} ({e}); choose another --out") from None
    return report


def _train_val(name: str, split_names: list[str]) -> tuple[str, str]:
    train, val = DEFAULT_SPLITS.get(name, ("train", "val"))
    if name == "folder":
        train = next((s for s in SPLIT_ALIASES["train"] if s in split_names), split_names[0])
        val = next((s for s in SPLIT_ALIASES["val"] if s in split_names), split_names[-1])
    return train, val


def preview_image(ds: SegmentationDataset, count: int = _PREVIEW, per_row: int = 4) -> Image.Image:
    """A grid of the first `count` images of a split with their masks overlaid, and a legend below."""
    from ..viz import colorize, legend, palette, tile

    colors = ds.mask_format.class_colors() if ds.mask_format is not None else None
    if not colors:
        colors = palette(ds.num_classes)
        if ds.class_names[0] == "background":  # background dark, the first object class bright (binary masks)
            colors = np.concatenate([colors[1:2], colors[:1], colors[2:]])
    colors = np.asarray(colors, dtype=np.uint8)
    n = min(count, len(ds))
    h, w = ds.image_size
    scale = max(1, int(np.ceil(96 / min(h, w))))
    tiles = []
    for i in range(n):
        img = ds.images[i].permute(1, 2, 0).numpy().astype(np.float32)  # (H, W, 3)
        mask = ds.masks[i].numpy()
        over = colorize(mask, ds.num_classes, colors).astype(np.float32)
        blend = (0.55 * img + 0.45 * over).round().clip(0, 255).astype(np.uint8)
        tiles.append(blend.repeat(scale, 0).repeat(scale, 1))
    grid = tile(tiles, min(per_row, n))
    strip = np.asarray(legend(ds.class_names, colors, grid.shape[1]))
    return Image.fromarray(np.concatenate([grid, strip], axis=0))
