"""Detecting a dataset's mask format: one pass over its masks (MaskScan, cached), then the rules below.

The formats are described in masks.py. detect_mask_format picks one:
- with a classes.json that gives colours: colour (every colour must be listed; JPEG colours are snapped to the
  nearest listed one unless too many pixels are far from all of them);
- masks that hold only 0 and 255 (or only 0 and 1, without classes.json): binary;
- otherwise class ids 0..C-1 (palette when every mask is a palette PNG), or, without classes.json, values:
  one class per value when the values are not contiguous ids; ignore_index (default 255) is ignore.
JPEG masks are lossy, so their values scatter around the true ones: each value is snapped to the nearest of the
dataset's dominant values and the changed pixels are counted and reported; masks whose values do not gather
around a few dominant values are refused. A rare value above every common value (in a few files, a sliver of
the pixels) is a stray: it is read as ignore and reported with a file that holds it. classes.json may also be a
plain list of names (["background", "cat"]): then the mask values are class ids into it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import SeglabError
from .classes import ClassSpec
from .io import IGNORE_INDEX, RawMask, read_raw_mask
from .masks import MaskFormat, mask_colours, nearest_colour, pack_colour, unpack_colour

_SCAN_VERSION = 1  # of the cached scans' layout
_JPEG_SNAP_FAR = 64  # a JPEG mask pixel farther than this from every dominant value is "not clearly one"
_JPEG_FAR_SHARE = 0.02  # ... and more than this share of such pixels refuses the masks
_JPEG_NEAR_SHARE = 0.5  # ... and at least this share of them must sit on (or next to) a dominant value
_PEAK_SHARE = 0.005  # a dominant value of JPEG masks holds at least this share of the pixels
_STRAY_PIXEL_SHARE = 0.001  # a stray value holds less than this share of the labelled pixels
_STRAY_FILE_SHARE = 0.02  # ... and is in at most this share of the files (at least one)
_COLOUR_SNAP = 60.0  # JPEG colour masks: farthest (Euclidean RGB) distance snapped to a listed colour


@dataclass
class MaskScan:
    """What one pass over a dataset's mask files saw: value and colour histograms, sizes, unreadable files."""

    files: int = 0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))  # grey/palette values
    palette_hist: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))  # palette files only
    value_files: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))
    value_example: dict[int, str] = field(default_factory=dict)
    colours: Counter = field(default_factory=Counter)  # packed colour -> pixels (rgb and palette masks)
    colour_example: dict[int, str] = field(default_factory=dict)
    kinds: Counter = field(default_factory=Counter)  # grey / palette / rgb -> files
    jpeg: int = 0
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (W, H)
    bad: dict[str, str] = field(default_factory=dict)  # path -> why it could not be read

    def add(self, path: str, raw: RawMask) -> None:
        self.files += 1
        self.kinds[raw.kind] += 1
        self.jpeg += raw.jpeg
        self.sizes[path] = (int(raw.pixels.shape[1]), int(raw.pixels.shape[0]))
        if raw.kind in ("rgb", "palette"):
            uniq, counts = np.unique(mask_colours(raw), return_counts=True)
            for c, n in zip(uniq.tolist(), counts.tolist()):
                self.colours[c] += n
                self.colour_example.setdefault(c, path)
            if raw.kind == "rgb":
                return
        v = raw.pixels
        if v.size and (v.min() < 0 or v.max() > 255):
            self.bad[path] = f"16-bit mask with values above 255 (up to {int(v.max())}); save masks as 8-bit"
            return
        counts = np.bincount(v.ravel(), minlength=256)
        self.hist += counts
        if raw.kind == "palette":
            self.palette_hist += counts
        present = counts > 0
        self.value_files += present
        for val in np.flatnonzero(present).tolist():
            self.value_example.setdefault(val, path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files, "hist": self.hist.tolist(), "palette_hist": self.palette_hist.tolist(),
            "value_files": self.value_files.tolist(),
            "value_example": {str(k): v for k, v in self.value_example.items()},
            "colours": {str(k): v for k, v in self.colours.items()},
            "colour_example": {str(k): v for k, v in self.colour_example.items()},
            "kinds": dict(self.kinds), "jpeg": self.jpeg, "sizes": {k: list(v) for k, v in self.sizes.items()},
            "bad": self.bad,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MaskScan:
        return cls(
            files=d["files"], hist=np.array(d["hist"], dtype=np.int64),
            palette_hist=np.array(d["palette_hist"], dtype=np.int64),
            value_files=np.array(d["value_files"], dtype=np.int64),
            value_example={int(k): v for k, v in d["value_example"].items()},
            colours=Counter({int(k): v for k, v in d["colours"].items()}),
            colour_example={int(k): v for k, v in d["colour_example"].items()},
            kinds=Counter(d["kinds"]), jpeg=d["jpeg"], sizes={k: tuple(v) for k, v in d["sizes"].items()},
            bad=dict(d["bad"]),
        )


def scan_masks(paths: Sequence[str | Path], cache_dir: str | Path | None = None) -> MaskScan:
    """Read every mask once and gather its values (cached in cache_dir by the files' names, sizes and times)."""
    paths = [Path(p) for p in paths]
    h = hashlib.sha256(f"scan{_SCAN_VERSION}".encode())
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns};".encode())
        except OSError:
            h.update(f"{p}:missing;".encode())
    cached = Path(cache_dir) / "masks" / f"{h.hexdigest()[:24]}.json" if cache_dir is not None else None
    if cached is not None and cached.exists():
        try:
            return MaskScan.from_dict(json.loads(cached.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged scan cache: scan again
    scan = MaskScan()
    for p in paths:
        try:
            scan.add(str(p), read_raw_mask(p))
        except SeglabError as e:
            scan.bad[str(p)] = str(e)
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(scan.to_dict()))
            os.replace(tmp, cached)
        except OSError:
            pass  # a read-only cache folder only costs a second scan next time
    return scan


def _peaks(hist: np.ndarray) -> list[int]:
    """The dominant values of lossy (JPEG) masks: local maxima holding at least _PEAK_SHARE of the pixels."""
    total = hist.sum()
    top = int(np.flatnonzero(hist).max()) if total else 0
    radius = max(1, top // 16)  # 0/255 masks: values within 15 of a peak are its noise; 0/1/2 masks: 1
    peaks: list[int] = []
    for v in np.argsort(-hist, kind="stable").tolist():
        if hist[v] < _PEAK_SHARE * total:
            break
        if all(abs(v - p) > radius for p in peaks):
            peaks.append(v)
    return sorted(peaks)


def detect_mask_format(
    scan: MaskScan, classes: ClassSpec | None = None, ignore_index: int | None = IGNORE_INDEX, where: str = "the masks"
) -> MaskFormat:
    """Decide the format of a dataset's masks from a scan (see the module docstring for the rules)."""
    return _detect(scan, classes, ignore_index, where)


def _detect(
    scan: MaskScan, classes: ClassSpec | None, ignore_index: int | None, where: str
) -> MaskFormat:
    if ignore_index is not None and not (isinstance(ignore_index, int) and 0 <= ignore_index <= 255):
        raise SeglabError(f"ignore_index must be 0..255 (or none), not {ignore_index!r}")
    if scan.files == 0:
        detail = f" ({len(scan.bad)} unreadable, e.g. {next(iter(scan.bad.values()))})" if scan.bad else ""
        raise SeglabError(f"no readable mask in {where}{detail}")
    if classes is not None and classes.colors:
        return _colour_format(scan, classes, ignore_index, where)
    if scan.kinds["rgb"] * 2 > scan.files:  # a few colour files in a grey dataset are errors of those files
        common = ", ".join(str(list(unpack_colour(c))) for c, _ in scan.colours.most_common(6))
        example = next(iter(scan.colour_example.values()))
        raise SeglabError(
            f"masks are colour images (e.g. {example}; most common colours {common}) and there is no classes.json "
            'with colours: write one beside images/ and masks/ as [{"name": "background", "color": [0, 0, 0]}, '
            '{"name": "cat", "color": [255, 0, 0]}, ...] (or save the masks as class ids).'
        )
    hist = scan.hist
    total = int(hist.sum())
    snap, snapped, values_seen = False, 0, [int(v) for v in np.flatnonzero(hist)]
    if scan.jpeg:
        peaks = _peaks(hist)
        dist = np.abs(np.arange(256)[:, None] - np.array(peaks)[None, :]).min(axis=1)
        far = int(hist[dist > _JPEG_SNAP_FAR].sum())
        # Lossy masks of a few classes keep most pixels at (or a step from) their class values.
        near = int(hist[dist <= (4 if max(peaks, default=0) >= 64 else 0)].sum())
        if not peaks or len(peaks) > 12 or far > _JPEG_FAR_SHARE * total or near < _JPEG_NEAR_SHARE * total:
            raise SeglabError(
                f"{scan.jpeg} mask(s) in {where} are JPEG (lossy) and their values do not gather around a few "
                f"class values ({100 * far / max(total, 1):.1f}% of the pixels are far from all of "
                f"{', '.join(map(str, peaks[:8])) or 'none'}), so the classes cannot be recovered. Save the "
                "masks as PNG (lossless)."
            )
        snapped = int(hist.sum() - hist[peaks].sum())
        snap, values_seen = True, peaks
        radius = max(1, max(peaks) // 16)
        if radius >= 4:  # a dark peak at 1 or a light one at 253 is a JPEG's 0 or 255
            canon = {p: 0 if p <= radius else 255 if p >= 255 - radius else p for p in peaks}
            if len(set(canon.values())) == len(peaks):
                values_seen = [canon[p] for p in peaks]
    # A stray: a rare value (a sliver of the pixels, in a few files) that is neither the ignore value nor the next
    # class id after the common values (a rare real class usually is). Only without classes.json, not for JPEG.
    max_files = max(1, int(_STRAY_FILE_SHARE * scan.files))
    def rare(v: int) -> bool:
        return hist[v] < _STRAY_PIXEL_SHARE * total and scan.value_files[v] <= max_files
    top = max([v for v in values_seen if not rare(v) and v != ignore_index], default=0)
    stray = ([v for v in values_seen if rare(v) and v != ignore_index and v > top + 1]
             if classes is None and not snap else [])
    seen = set(values_seen) - set(stray)
    fmt_kind, label, notes = "class ids", "", []
    names: list[str]
    binary = None
    if seen and seen <= {0, 255} and 255 in seen and (classes is None or len(classes.names) == 2):
        binary = ({0: 0, 255: 1}, "0/255")
    elif classes is None and seen and seen <= {0, 1} and 1 in seen:
        binary = ({0: 0, 1: 1}, "0/1")
    if binary is not None:
        values = dict(binary[0])
        for v in stray:
            values[v] = IGNORE_INDEX
        return MaskFormat("binary", classes.names if classes else ("background", "foreground"), values, snap=snap,
                          ignore_index=None, label=binary[1], snapped=snapped, pixels=total,
                          stray={v: (int(scan.value_files[v]), scan.value_example.get(v, "?")) for v in stray})
    if classes is not None:
        # classes.json names the classes: values are ids into it; a mask holding any other value is an error
        # of that file (reported, or left out with skip_bad), never a new class.
        values = {v: v for v in range(len(classes.names))}
        names = list(classes.names)
    else:
        ids = sorted(v for v in seen if v != ignore_index)
        if ids == list(range(len(ids))):
            values = {v: v for v in ids}
            names = [f"class{v}" for v in ids]
            label = f"0..{len(ids) - 1}" if ids else ""
        else:
            fmt_kind = "values"
            values = {v: i for i, v in enumerate(ids)}
            names = [f"class{v}" for v in ids]
            label = ", ".join(map(str, ids))
            notes.append("not contiguous class ids: one class per value, in increasing order")
    if ignore_index is not None:
        values[ignore_index] = IGNORE_INDEX
    if scan.kinds["palette"] == scan.files and fmt_kind == "class ids":
        fmt_kind = "palette"
    stray_info = {v: (int(scan.value_files[v]), scan.value_example.get(v, "?")) for v in stray}
    return MaskFormat(fmt_kind, tuple(names), values, snap=snap, ignore_index=ignore_index, label=label,
                      stray=stray_info, snapped=snapped, pixels=total, notes=tuple(notes))


def _colour_format(scan: MaskScan, classes: ClassSpec, ignore_index: int | None, where: str) -> MaskFormat:
    colors = {pack_colour(c): i for i, c in enumerate(classes.colors)}
    for c in classes.ignore_colors:
        colors[pack_colour(c)] = IGNORE_INDEX
    # Grey files of a colour dataset are read as colours (v, v, v); palette files were scanned as colours.
    seen = Counter(scan.colours)
    if scan.kinds["grey"]:
        grey_hist = scan.hist - scan.palette_hist
        for v in np.flatnonzero(grey_hist).tolist():
            seen[(v << 16) | (v << 8) | v] += int(grey_hist[v])
    total = sum(seen.values())
    missing = np.array([c for c in seen if c not in colors], dtype=np.int64)
    snapped = far = 0
    if missing.size:
        if not scan.jpeg:
            c = int(missing[0])
            example = scan.colour_example.get(c) or scan.value_example.get(c & 255, "?")
            MaskFormat("colour", classes.names, colors=colors).read(example)  # raises, naming a pixel
            raise SeglabError(f"mask colour {list(unpack_colour(c))} is not in classes.json: {example}")
        keys = np.array(sorted(colors), dtype=np.int64)
        near = keys[nearest_colour(missing, keys)]
        dist = np.sqrt(sum(((missing >> s & 255) - (near >> s & 255)) ** 2 for s in (16, 8, 0)))
        counts = np.array([seen[int(c)] for c in missing])
        snapped, far = int(counts.sum()), int(counts[dist > _COLOUR_SNAP].sum())
        if far > _JPEG_FAR_SHARE * total:
            raise SeglabError(
                f"{scan.jpeg} colour mask(s) in {where} are JPEG (lossy) and {100 * far / total:.1f}% of their pixels "
                "are far from every colour in classes.json, so the classes cannot be recovered. Save the masks as "
                "PNG (lossless), or add the missing colours to classes.json."
            )
    return MaskFormat("colour", classes.names, colors=colors, snap=bool(scan.jpeg), ignore_index=ignore_index,
                      snapped=snapped, pixels=total)
