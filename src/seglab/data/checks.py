"""Pre-flight checks of a training and a validation split: what must stop a run, and what it should be told.

Refused (errors): fewer than two classes occur in the training masks; more than half of the training pixels are
ignored; the validation split shares files with the training split (the same sample id, or an image with the
very same pixels). Warned once: a class that never occurs in the training masks (named in classes.json, or
part of the dataset's class list), since the model cannot learn it and its metrics show n/a.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .dataset import ImageStore, SegmentationDataset


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%" if x >= 0.01 or x == 0 else f"{100 * x:.2f}%"


def check_splits(
    train: SegmentationDataset | ImageStore, val: SegmentationDataset | ImageStore | None = None, where: str = ""
) -> tuple[list[str], list[str]]:
    """(errors, warnings) about training on `train` and validating on `val`; where names the data in messages."""
    errors: list[str] = []
    warnings: list[str] = []
    names = train.class_names
    counts = train.pixel_counts()
    ignored = train.ignored_pixels()
    total = sum(counts) + ignored
    at = f" of {where}" if where else ""
    fmt = train.mask_format.describe() if train.mask_format is not None else "class ids"
    present = [n for n, c in zip(names, counts) if c > 0]
    if len(present) < 2:
        errors.append(
            f"only {len(present)} class(es) ({', '.join(present) or 'none'}) occur in the training masks{at} "
            f"(split {train.split!r}), read as: {fmt}. A segmentation model needs at least two; check the masks "
            "and their format (seglab data inspect shows what was read), or --ignore-index."
        )
    if total and ignored > total / 2:
        errors.append(
            f"{_pct(ignored / total)} of the training pixels{at} (split {train.split!r}) are ignore (255 after "
            f"reading the masks as: {fmt}): more than half, so the run would learn from a sliver of the data. "
            "Check --ignore-index and the masks (seglab data inspect)."
        )
    absent = [n for n, c in zip(names, counts) if c == 0]
    if absent and len(present) >= 2:
        warnings.append(
            f"class(es) {', '.join(absent)} never occur in the training masks{at} (split {train.split!r}): the model "
            "cannot learn them and their metrics show n/a"
        )
    if val is not None:
        shared = sorted(set(train.ids) & set(val.ids))
        if not shared:
            digests = {_digest(train, i): train.ids[i] for i in range(len(train))}
            shared = [f"{val.ids[j]} = {digests[d]}" for j in range(len(val)) if (d := _digest(val, j)) in digests]
        if shared:
            errors.append(
                f"the validation split {val.split!r} shares {len(shared)} file(s) with the training split "
                f"{train.split!r}{at} (e.g. {shared[0]}): its metrics would measure memory, not generalisation. "
                "Use two different splits (folders train/ and val/, or the 80/20 split of --train-split train "
                "--val-split val)."
            )
    return errors, warnings


def _digest(ds: SegmentationDataset | ImageStore, i: int) -> str:
    return hashlib.blake2b(np.ascontiguousarray(ds.image_array(i)).tobytes(), digest_size=16).hexdigest()
