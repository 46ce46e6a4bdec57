"""Mask formats: how a dataset's masks encode classes (MaskFormat), and turning a mask into class ids.

Every mask becomes uint8 class ids 0..C-1 with 255 = ignore (the library's convention, io.IGNORE_INDEX). The
formats (detected from a dataset's masks by mask_detect.py, or fixed by a dataset with its own encoding):

  binary       the masks hold only the values 0 and 255, or only 0 and 1: 0 -> background (class 0), 255 or 1
               -> foreground (class 1). The one rule for 255: when every mask of a dataset holds only 0 and 255,
               255 is foreground, not ignore, whatever ignore_index says (binary masks have no ignore value).
  class ids    grey values (or grey saved as RGB) are the class ids 0..C-1; the value ignore_index (default 255)
               means ignore.
  values       grey values that are not 0..C-1 (0/100/200, or ids 0, 1, 2, 7): one class per value in increasing
               order, named class<value>, and reported as such (never C = max + 1 classes that never occur).
  palette      palette ("P") PNGs: the palette index is the class id (Pascal VOC); 255 = ignore.
  colour       RGB masks: each colour is a class through classes.json (classes.py). A colour not in the map is an
               error naming the file and a pixel.
  fixed        a dataset's own known encoding (Oxford trimaps, VOC palettes, synthetic ids): fixed_format.
JPEG masks are lossy: with `snap`, each value is read as the nearest of the format's values (each colour as the
nearest listed colour); stray values (rare values detection read as ignore) are ignore.

A MaskFormat is a small JSON-able record (to_dict / from_dict): config.yaml keeps it so a repeat reads the
data the same way, and its key() is part of the dataset cache key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import SeglabError
from .io import IGNORE_INDEX, RawMask, read_raw_mask

_VERSION = 1  # of MaskFormat.to_dict's layout


# ------------------------------------------------------------------------------------------- colours


def pack_colours(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 colours -> (...) int64 0xRRGGBB."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def pack_colour(rgb: Sequence[int]) -> int:
    """One colour (r, g, b) -> int 0xRRGGBB."""
    return int(pack_colours(np.array(rgb, dtype=np.uint8)))


def unpack_colour(c: int) -> tuple[int, int, int]:
    """int 0xRRGGBB -> (r, g, b)."""
    return (int(c) >> 16) & 255, (int(c) >> 8) & 255, int(c) & 255


def mask_colours(raw: RawMask) -> np.ndarray:
    """Any raw mask as packed colours (H, W): grey v -> (v, v, v), palette index -> its palette colour."""
    if raw.kind == "rgb":
        return pack_colours(raw.pixels)
    if raw.kind == "palette":
        return pack_colours(raw.palette[np.clip(raw.pixels, 0, 255)])
    v = np.clip(raw.pixels, 0, 255)
    return (v << 16) | (v << 8) | v


def nearest_colour(colours: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Index into keys of the nearest (Euclidean RGB) colour to each packed colour."""
    a = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], axis=-1).astype(np.float64)
    b = np.stack([(keys >> 16) & 255, (keys >> 8) & 255, keys & 255], axis=-1).astype(np.float64)
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).argmin(axis=1)


def _where(mask: np.ndarray) -> str:
    y, x = (int(v) for v in np.argwhere(mask)[0])
    return f"pixel (x={x}, y={y})"


# ------------------------------------------------------------------------------------------- the format


@dataclass
class MaskFormat:
    """How a dataset's masks map to class ids, and what detection saw (for the summary line and reports).

    kind: "binary", "class ids", "values", "palette", "colour" or "fixed" (a dataset's own known encoding).
    values: stored grey/palette value -> class id (IGNORE_INDEX for ignore); snap: JPEG, map any value to the nearest
    key. colors: packed 0xRRGGBB -> class id (IGNORE_INDEX for ignore colours), for colour masks.
    """

    kind: str
    class_names: tuple[str, ...]
    values: dict[int, int] = field(default_factory=dict)
    colors: dict[int, int] = field(default_factory=dict)
    snap: bool = False
    ignore_index: int | None = IGNORE_INDEX
    label: str = ""  # how the stored values read, e.g. "0/255" or "Oxford trimaps 1/2/3"
    stray: dict[int, tuple[int, str]] = field(default_factory=dict)  # value -> (files, an example file)
    snapped: int = 0  # pixels changed by snapping JPEG masks
    pixels: int = 0  # pixels looked at by detection
    notes: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_colors(self) -> list[tuple[int, int, int]] | None:
        """Each class's colour in colour masks (for legends), or None when the masks are not colour masks."""
        if not self.colors:
            return None
        by_class = {cid: unpack_colour(c) for c, cid in self.colors.items() if cid != IGNORE_INDEX}
        return [by_class.get(i, (0, 0, 0)) for i in range(self.num_classes)]

    # -- reading

    def to_ids(self, raw: RawMask, path: str | Path) -> np.ndarray:
        """A raw mask as uint8 class ids (H, W), 255 = ignore; a value or colour outside the format is an error."""
        if self.colors and (raw.kind == "rgb" or not self.values):  # a format with both: colours for RGB masks
            return self._colour_ids(raw, path)
        if raw.kind == "rgb":
            first = unpack_colour(int(pack_colours(raw.pixels).flat[0]))
            raise SeglabError(
                f"mask is a colour image: {path} ({first} at pixel (x=0, y=0)), but this dataset's "
                f"masks were read as {self.label or self.kind}. Give every colour a class in classes.json "
                '([{"name": "cat", "color": [255, 0, 0]}, ...]) or save the mask as class ids.'
            )
        v = raw.pixels
        if v.size and (v.min() < 0 or v.max() > 255):
            bad = v[(v < 0) | (v > 255)]
            raise SeglabError(f"mask value {int(bad[0])} at {_where((v < 0) | (v > 255))} is outside 0..255: {path}. "
                              "Save masks as 8-bit class ids.")
        lut = self._lut()
        out = lut[v]
        if (out < 0).any():
            bad = out < 0
            shown = ", ".join(str(int(x)) for x in np.unique(v[bad])[:8])
            raise SeglabError(
                f"mask holds value(s) {shown} ({_where(bad)}) that are not in this dataset's mask format "
                f"({self.describe()}): {path}. Fix the mask, or remove the recorded format to detect it again."
            )
        return out.astype(np.uint8)

    def read(self, path: str | Path) -> np.ndarray:
        """Read a mask file as uint8 class ids (H, W), 255 = ignore."""
        return self.to_ids(read_raw_mask(path), path)

    def _lut(self) -> np.ndarray:
        lut = np.full(256, -1, dtype=np.int64)
        if self.snap and self.values:
            keys = np.array(sorted(self.values))
            nearest = keys[np.abs(np.arange(256)[:, None] - keys[None, :]).argmin(axis=1)]
            lut[:] = [self.values[int(k)] for k in nearest]
        else:
            for v, cid in self.values.items():
                lut[v] = cid
        for v in self.stray:
            lut[v] = IGNORE_INDEX
        return lut

    def _colour_ids(self, raw: RawMask, path: str | Path) -> np.ndarray:
        packed = mask_colours(raw)  # (H, W)
        uniq, inverse = np.unique(packed, return_inverse=True)
        keys = np.array(sorted(self.colors), dtype=np.int64)
        key_ids = np.array([self.colors[int(k)] for k in keys], dtype=np.int64)
        pos = np.clip(np.searchsorted(keys, uniq), 0, len(keys) - 1)
        hit = keys[pos] == uniq
        ids = np.where(hit, key_ids[pos], -1)
        if not hit.all():
            if raw.jpeg:  # lossy: every colour is the nearest listed one (detection refused far-off colours)
                ids[~hit] = key_ids[nearest_colour(uniq[~hit], keys)]
            else:
                c = int(uniq[~hit][0])
                listed = ", ".join(str(list(unpack_colour(k))) for k in keys[:6]) + (" ..." if len(keys) > 6 else "")
                raise SeglabError(
                    f"mask colour {list(unpack_colour(c))} at {_where(packed == c)} is not in classes.json "
                    f"(its colours: {listed}): {path}. Add it to classes.json "
                    '({"name": ..., "color": [r, g, b]}, or "ignore": true) or fix the mask.'
                )
        return ids[inverse].reshape(packed.shape).astype(np.uint8)

    # -- saying what was read

    def describe(self, shares: Sequence[float] | None = None, split: str = "train") -> str:
        """One line: 'binary 0/255 -> background, foreground; train pixels 71% / 29%' (shares: per class, 0..1)."""
        names = list(self.class_names)
        shown = ", ".join(names) if len(names) <= 8 else ", ".join(names[:6]) + f", ... ({len(names)} classes)"
        what = {
            "palette": "palette PNGs, index = class id",
            "colour": "RGB colours from classes.json",
            "fixed": self.label,
        }.get(self.kind, f"{self.kind} {self.label}".strip())
        extra = []
        if self.snap:
            pct = f" ({100 * self.snapped / self.pixels:.1f}%)" if self.pixels else ""
            extra.append(f"JPEG, {self.snapped:,} pixels{pct} snapped")
        ignores = IGNORE_INDEX in self.values.values()
        if self.ignore_index is not None and self.kind not in ("binary", "colour") and ignores:
            extra.append(f"{self.ignore_index} = ignore")
        line = what + (f" ({'; '.join(extra)})" if extra else "") + f" -> {shown}"
        for v, (files, example) in sorted(self.stray.items()):
            line += f"; stray value {v} in {files} file(s), e.g. {Path(example).name}, read as ignore"
        for note in self.notes:
            line += f"; {note}"
        if shares is not None and len(shares):
            line += f"; {split} pixels " + " / ".join(f"{100 * s:.0f}%" for s in shares)
        return line

    # -- serialising

    def to_dict(self) -> dict[str, Any]:
        """The format as plain JSON/YAML data (what config.yaml records)."""
        return {
            "version": _VERSION,
            "kind": self.kind,
            "label": self.label,
            "class_names": list(self.class_names),
            "values": {str(k): v for k, v in sorted(self.values.items())},
            "colors": {f"{k:06x}": v for k, v in sorted(self.colors.items())},
            "snap": self.snap,
            "ignore_index": self.ignore_index,
            "stray": {str(k): [n, ex] for k, (n, ex) in sorted(self.stray.items())},
            "snapped": self.snapped,
            "pixels": self.pixels,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MaskFormat:
        """The inverse of to_dict (a SeglabError when d is not one)."""
        try:
            return cls(
                kind=str(d["kind"]),
                class_names=tuple(str(n) for n in d["class_names"]),
                values={int(k): int(v) for k, v in d.get("values", {}).items()},
                colors={int(k, 16): int(v) for k, v in d.get("colors", {}).items()},
                snap=bool(d.get("snap", False)),
                ignore_index=None if d.get("ignore_index") is None else int(d["ignore_index"]),
                label=str(d.get("label", "")),
                stray={int(k): (int(v[0]), str(v[1])) for k, v in d.get("stray", {}).items()},
                snapped=int(d.get("snapped", 0)),
                pixels=int(d.get("pixels", 0)),
                notes=tuple(str(n) for n in d.get("notes", ())),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise SeglabError(f"the recorded mask format is not valid ({type(e).__name__}: {e}); remove it (the "
                              "masks: entry of config.yaml) to detect the format again") from None

    def key(self) -> str:
        """A short hash of what decides the class ids (not the statistics): part of the dataset cache key."""
        d = self.to_dict()
        for k in ("snapped", "pixels", "notes"):
            d.pop(k)
        d["stray"] = sorted(d["stray"])
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def fixed_format(class_names: Sequence[str], values: dict[int, int], label: str,
                 ignore_index: int | None = None, colors: dict[tuple[int, int, int], int] | None = None) -> MaskFormat:
    """The format of a dataset with its own known encoding (Oxford trimaps, VOC palettes, synthetic ids); colors
    (RGB -> class id) also reads masks saved as RGB images."""
    packed = {pack_colour(c): i for c, i in (colors or {}).items()}
    return MaskFormat("fixed", tuple(class_names), values=dict(values), colors=packed, ignore_index=ignore_index,
                      label=label)
