"""Mask formats: detect how a dataset's masks encode classes, turn every mask into class ids, say what was read.

Every mask becomes uint8 class ids 0..C-1 with 255 = ignore (the library's convention). Detection looks at all
of a dataset's masks once (one pass, cached) and picks one of these formats:

  binary       the masks hold only the values 0 and 255, or only 0 and 1: 0 -> background (class 0), 255 or 1
               -> foreground (class 1). The one rule for 255: when every mask of a dataset holds only 0 and 255,
               255 is foreground, not ignore, whatever ignore_index says (binary masks have no ignore value).
  class ids    grey values (or grey saved as RGB) are the class ids 0..C-1; the value ignore_index (default 255)
               means ignore.
  values       grey values that are not 0..C-1 (0/100/200, or ids 0, 1, 2, 7): one class per value in increasing
               order, named class<value>, and reported as such (never C = max + 1 classes that never occur).
  palette      palette ("P") PNGs: the palette index is the class id (Pascal VOC); 255 = ignore.
  colour       RGB masks: each colour is a class through classes.json ([{"name": "cat", "color": [255, 0, 0]},
               ...]; an entry with "ignore": true marks an ignore colour, e.g. VOC's border colour). A colour not
               in the map is an error naming the file and a pixel.
JPEG masks are lossy, so their values scatter around the true ones: each value is snapped to the nearest of the
dataset's dominant values and the changed pixels are counted and reported; masks whose values do not gather
around a few dominant values are refused. A rare value above every common value (in a few files, a sliver of
the pixels) is a stray: it is read as ignore and reported with a file that holds it. classes.json may also be a
plain list of names (["background", "cat"]): then the mask values are class ids into it.

A MaskFormat is a small JSON-able record (to_dict / from_dict): config.yaml keeps it so a repeat reads the
data the same way, and its key() is part of the dataset cache key.
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
from .io import _open, _upright

IGNORE = 255  # the ignore value of normalised masks
_VERSION = 1
_JPEG_SNAP_FAR = 64  # a JPEG mask pixel farther than this from every dominant value is "not clearly one"
_JPEG_FAR_SHARE = 0.02  # ... and more than this share of such pixels refuses the masks
_JPEG_NEAR_SHARE = 0.5  # ... and at least this share of them must sit on (or next to) a dominant value
_PEAK_SHARE = 0.005  # a dominant value of JPEG masks holds at least this share of the pixels
_STRAY_PIXEL_SHARE = 0.001  # a stray value holds less than this share of the labelled pixels
_STRAY_FILE_SHARE = 0.02  # ... and is in at most this share of the files (at least one)
_COLOUR_SNAP = 60.0  # JPEG colour masks: farthest (Euclidean RGB) distance snapped to a listed colour


# ------------------------------------------------------------------------------------------- classes.json


@dataclass(frozen=True)
class ClassSpec:
    """What classes.json says: class names, and (for colour masks) one colour per class and ignore colours."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...] = ()  # empty, or one per class
    ignore_colors: tuple[tuple[int, int, int], ...] = ()


def read_classes_json(path: str | Path) -> ClassSpec:
    """Read classes.json: a list of names, or of {"name": ..., "color": [r, g, b]} (optionally "ignore": true)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SeglabError(f"classes.json is not valid JSON ({e}): {path}") from None
    except OSError as e:
        raise SeglabError(f"cannot read {path} ({e})") from None
    example = '["background", "cat"] or [{"name": "cat", "color": [255, 0, 0]}, ...]'
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        data = [{"name": str(k), "color": v} for k, v in data.items()]  # {"cat": [255, 0, 0], ...}
    if not (isinstance(data, list) and data):
        raise SeglabError(f"classes.json must be a non-empty JSON list, e.g. {example}: {path}")
    names: list[str] = []
    colors: list[tuple[int, int, int]] = []
    ignore: list[tuple[int, int, int]] = []
    for i, entry in enumerate(data):
        if isinstance(entry, str):
            names.append(entry)
            continue
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)):
            raise SeglabError(f"classes.json entry {i} must be a name or {{\"name\": ..., \"color\": [r, g, b]}}, "
                              f"not {entry!r}: {path}")
        color = entry.get("color", entry.get("colour"))
        if color is not None:
            if not (isinstance(color, list) and len(color) == 3
                    and all(isinstance(c, int) and 0 <= c <= 255 for c in color)):
                raise SeglabError(f"classes.json entry {i} ({entry['name']!r}): color must be [r, g, b] with "
                                  f"0..255 integers, not {color!r}: {path}")
            color = tuple(color)
        if entry.get("ignore"):
            if color is None:
                raise SeglabError(f"classes.json entry {i} ({entry['name']!r}) is an ignore entry without a color: "
                                  f"{path}")
            ignore.append(color)
            continue
        names.append(entry["name"])
        if color is not None:
            colors.append(color)
    if colors and len(colors) != len(names):
        raise SeglabError(f"classes.json gives colours for {len(colors)} of its {len(names)} classes; give every "
                          f"class a color (or none): {path}")
    if len(set(colors)) != len(colors) or set(colors) & set(ignore):
        raise SeglabError(f"classes.json gives one colour to several entries; every colour must be distinct: {path}")
    if len(names) > 255:
        raise SeglabError(f"classes.json names {len(names)} classes; at most 255 (ids 0..254, 255 = ignore): {path}")
    if len(set(names)) != len(names):
        raise SeglabError(f"classes.json names a class twice; class names must be distinct: {path}")
    return ClassSpec(tuple(names), tuple(colors), tuple(ignore))


# ------------------------------------------------------------------------------------------ reading a mask


@dataclass
class RawMask:
    """A mask file's pixels as stored: grey/palette values (H, W) int64, or colours (H, W, 3) uint8."""

    pixels: np.ndarray
    kind: str  # "grey" | "palette" | "rgb"
    jpeg: bool
    palette: np.ndarray | None = None  # (256, 3) uint8 for palette masks


def read_raw_mask(path: str | Path) -> RawMask:
    """Read a mask file as stored (turned upright by its EXIF orientation); grey saved as RGB comes back grey."""
    path = Path(path)
    stored = _open(path, "mask")
    jpeg = stored.format == "JPEG" or path.suffix.lower() in (".jpg", ".jpeg")
    img, _ = _upright(stored)
    try:
        if img.mode == "P":
            pal = np.zeros((256, 3), dtype=np.uint8)
            raw_pal = np.frombuffer(bytes(img.getpalette() or []), dtype=np.uint8)[: 256 * 3]
            pal.reshape(-1)[: raw_pal.size] = raw_pal
            return RawMask(np.asarray(img).astype(np.int64), "palette", jpeg, pal)
        if img.mode == "1":
            return RawMask(np.asarray(img).astype(np.int64), "grey", jpeg)
        if img.mode in ("L", "LA"):
            return RawMask(np.asarray(img.convert("L")).astype(np.int64), "grey", jpeg)
        if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            return RawMask(np.asarray(img).astype(np.int64), "grey", jpeg)
        if img.mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr"):
            rgb = np.asarray(img.convert("RGB"))
            r, g, b = (rgb[..., c].astype(np.int16) for c in range(3))
            if np.array_equal(r, g) and np.array_equal(r, b):
                return RawMask(r.astype(np.int64), "grey", jpeg)
            if jpeg:
                # A grey mask saved as an RGB JPEG: the channels differ by the compression noise only.
                spread = np.maximum(np.abs(r - g), np.maximum(np.abs(r - b), np.abs(g - b)))
                if np.mean(spread <= 24) >= 0.99:
                    return RawMask(rgb.mean(axis=2).round().astype(np.int64), "grey", jpeg)
            return RawMask(rgb, "rgb", jpeg)
    except SeglabError:
        raise
    except Exception as e:  # noqa: BLE001 - an exotic mode Pillow cannot convert
        raise SeglabError(f"mask mode {img.mode!r} cannot be read ({e}): {path}. Save it as a PNG.") from None
    raise SeglabError(f"mask has an unsupported mode {img.mode!r}: {path}. Save it as a grayscale or palette PNG.")


def _pack(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 colours -> (...) int64 0xRRGGBB."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _unpack(c: int) -> tuple[int, int, int]:
    return (int(c) >> 16) & 255, (int(c) >> 8) & 255, int(c) & 255


def _as_colours(raw: RawMask) -> np.ndarray:
    """Any raw mask as packed colours (H, W): grey v -> (v, v, v), palette index -> its palette colour."""
    if raw.kind == "rgb":
        return _pack(raw.pixels)
    if raw.kind == "palette":
        return _pack(raw.palette[np.clip(raw.pixels, 0, 255)])
    v = np.clip(raw.pixels, 0, 255)
    return (v << 16) | (v << 8) | v


def _where(mask: np.ndarray) -> str:
    y, x = (int(v) for v in np.argwhere(mask)[0])
    return f"pixel (x={x}, y={y})"


# ------------------------------------------------------------------------------------------- the format


@dataclass
class MaskFormat:
    """How a dataset's masks map to class ids, and what detection saw (for the summary line and reports).

    kind: "binary", "class ids", "values", "palette", "colour" or "fixed" (a dataset's own known encoding).
    values: stored grey/palette value -> class id (IGNORE for ignore); snap: JPEG, map any value to the nearest
    key. colors: packed 0xRRGGBB -> class id (IGNORE for ignore colours), for colour masks.
    """

    kind: str
    class_names: tuple[str, ...]
    values: dict[int, int] = field(default_factory=dict)
    colors: dict[int, int] = field(default_factory=dict)
    snap: bool = False
    ignore_index: int | None = IGNORE
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
        by_class = {cid: _unpack(c) for c, cid in self.colors.items() if cid != IGNORE}
        return [by_class.get(i, (0, 0, 0)) for i in range(self.num_classes)]

    # -- reading

    def to_ids(self, raw: RawMask, path: str | Path) -> np.ndarray:
        """A raw mask as uint8 class ids (H, W), 255 = ignore; a value or colour outside the format is an error."""
        if self.colors and (raw.kind == "rgb" or not self.values):  # a format with both: colours for RGB masks
            return self._colour_ids(raw, path)
        if raw.kind == "rgb":
            c = _pack(raw.pixels)
            raise SeglabError(
                f"mask is a colour image: {path} ({_unpack(int(c.flat[0]))} at pixel (x=0, y=0)), but this dataset's "
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
            lut[v] = IGNORE
        return lut

    def _colour_ids(self, raw: RawMask, path: str | Path) -> np.ndarray:
        packed = _as_colours(raw)  # (H, W)
        uniq, inverse = np.unique(packed, return_inverse=True)
        keys = np.array(sorted(self.colors), dtype=np.int64)
        key_ids = np.array([self.colors[int(k)] for k in keys], dtype=np.int64)
        pos = np.clip(np.searchsorted(keys, uniq), 0, len(keys) - 1)
        hit = keys[pos] == uniq
        ids = np.where(hit, key_ids[pos], -1)
        if not hit.all():
            if raw.jpeg:  # lossy: every colour is the nearest listed one (detection refused far-off colours)
                ids[~hit] = key_ids[_nearest_colour(uniq[~hit], keys)]
            else:
                c = int(uniq[~hit][0])
                listed = ", ".join(str(list(_unpack(k))) for k in keys[:6]) + (" ..." if len(keys) > 6 else "")
                raise SeglabError(
                    f"mask colour {list(_unpack(c))} at {_where(packed == c)} is not in classes.json "
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
        if self.ignore_index is not None and self.kind not in ("binary", "colour") and IGNORE in self.values.values():
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
    packed = {int(_pack(np.array(c, dtype=np.uint8))): i for c, i in (colors or {}).items()}
    return MaskFormat("fixed", tuple(class_names), values=dict(values), colors=packed, ignore_index=ignore_index,
                      label=label)


# --------------------------------------------------------------------------------------------- detection


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
            uniq, counts = np.unique(_as_colours(raw), return_counts=True)
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
    h = hashlib.sha256(f"scan{_VERSION}".encode())
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
    scan: MaskScan, classes: ClassSpec | None = None, ignore_index: int | None = IGNORE, where: str = "the masks"
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
        common = ", ".join(str(list(_unpack(c))) for c, _ in scan.colours.most_common(6))
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
            values[v] = IGNORE
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
        values[ignore_index] = IGNORE
    if scan.kinds["palette"] == scan.files and fmt_kind == "class ids":
        fmt_kind = "palette"
    stray_info = {v: (int(scan.value_files[v]), scan.value_example.get(v, "?")) for v in stray}
    return MaskFormat(fmt_kind, tuple(names), values, snap=snap, ignore_index=ignore_index, label=label,
                      stray=stray_info, snapped=snapped, pixels=total, notes=tuple(notes))


def _nearest_colour(colours: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Index into keys of the nearest (Euclidean RGB) colour to each packed colour."""
    a = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], axis=-1).astype(np.float64)
    b = np.stack([(keys >> 16) & 255, (keys >> 8) & 255, keys & 255], axis=-1).astype(np.float64)
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).argmin(axis=1)


def _colour_format(scan: MaskScan, classes: ClassSpec, ignore_index: int | None, where: str) -> MaskFormat:
    colors = {int(_pack(np.array(c, dtype=np.uint8))): i for i, c in enumerate(classes.colors)}
    for c in classes.ignore_colors:
        colors[int(_pack(np.array(c, dtype=np.uint8)))] = IGNORE
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
            raise SeglabError(f"mask colour {list(_unpack(c))} is not in classes.json: {example}")
        keys = np.array(sorted(colors), dtype=np.int64)
        near = keys[_nearest_colour(missing, keys)]
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
