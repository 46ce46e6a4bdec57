"""Whole-image, sliding-window and test-time-augmented inference at any image size, in bounded memory.

One code path for every backend: a backend hands over a `forward` function (float32 images (B, 3, h, w) in
[0, 1] -> float32 logits (B, C, h, w)), and this module decides what the model sees and turns its logits into a
mask at the image's own size. numpy and Pillow only, so the ONNX Runtime path never imports torch.

What the model sees (a `Geometry`, recorded by training in the checkpoint and by export in the .onnx):
  article protocol   the image squashed to the training square (image_size x image_size), as the article trains;
  original protocol  the image rescaled with its aspect kept: long side = base_size, or its own long side capped
                     at max_side when base_size is unset (the scale the training crops were cut at).
Modes: `whole` runs the rescaled view at once (padded with zeros to a multiple of PAD_MULTIPLE so that views of
similar sizes share a batch); `slide` runs windows of the training crop over the view with `overlap`, in batches,
and blends them with a Gaussian weight (MONAI's sliding_window_inference does the same; a plain average leaves
seams at window edges). Test-time augmentation averages the softmax of every view (each scale, flipped or not).

Memory: the logits are resized back to the image and reduced to a mask in row chunks, so the (C, H, W) float map
of a large photo never exists; a sliding window keeps only the band of rows its current windows touch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .data.io import check_interpolation
from .errors import SeglabError

PROTOCOLS = ("article", "original")
MODES = ("whole", "slide")
PAD_MULTIPLE = 32  # whole-mode views are padded to a multiple of the largest stride of seglab's models
GAUSSIAN_SIGMA = 0.125  # of the window's side, as MONAI's sliding_window_inference (sigma_scale)
CHUNK_FLOATS = 1 << 23  # floats per row chunk of the resized logits (32 MB): bounds memory on large photos

Forward = Callable[[np.ndarray], np.ndarray]  # (B, 3, h, w) float32 in [0, 1] -> (B, C, h, w) float32 logits


@dataclass(frozen=True)
class Geometry:
    """How a model saw images in training, so that inference shows it images the same way."""

    protocol: str = "article"
    image_size: int = 128  # article: the square's side; original: the crop's side when crop_size is unset
    crop_size: tuple[int, int] | None = None  # original: the training crop (H, W): the slide window
    base_size: int | None = None  # original: the long side at scale 1.0; unset: the image's own, capped at max_side
    max_side: int | None = None  # original: the cache's cap on the long side (None: no cap)
    interpolation: str = "bilinear"
    fixed: bool = False  # the model only runs at image_size x image_size (an ONNX graph exported at a fixed size)

    @property
    def window(self) -> tuple[int, int]:
        """The slide window (H, W): the training crop, else the training square."""
        if self.crop_size is not None and not self.fixed:
            return int(self.crop_size[0]), int(self.crop_size[1])
        return self.image_size, self.image_size

    def view_size(self, height: int, width: int, scale: float = 1.0) -> tuple[int, int]:
        """The (H, W) an image of height x width is resized to before the model (whole) or the windows (slide)."""
        if self.protocol == "article" or self.fixed:
            side = max(1, round(self.image_size * scale))
            return side, side
        long = max(height, width)
        target = self.base_size if self.base_size else min(long, self.max_side or long)
        f = target * scale / long
        return max(1, round(height * f)), max(1, round(width * f))

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "image_size": self.image_size,
                "crop_size": list(self.crop_size) if self.crop_size else None, "base_size": self.base_size,
                "max_side": self.max_side, "interpolation": self.interpolation}

    @classmethod
    def from_dict(cls, d: dict[str, Any], fixed: bool = False) -> Geometry:
        """From a checkpoint header or ONNX metadata; what an older file lacks is the article protocol's."""
        crop = d.get("crop_size")
        return cls(protocol=d.get("protocol") or "article", image_size=int(d["image_size"]),
                   crop_size=(int(crop[0]), int(crop[1])) if crop else None,
                   base_size=int(d["base_size"]) if d.get("base_size") else None,
                   max_side=int(d["max_side"]) if d.get("max_side") else None,
                   interpolation=d.get("interpolation") or "nearest", fixed=fixed)


@dataclass(frozen=True)
class InferenceConfig:
    """How to run a model over an image: mode, window overlap, test-time augmentation, windows per batch."""

    mode: str = "whole"
    overlap: float = 0.25  # slide: the share of a window its neighbour covers again
    flip: bool = False  # TTA: also run the horizontally flipped image
    scales: tuple[float, ...] = (1.0,)  # TTA: the view scales (1.0: the training scale)
    # Windows (slide) or views (whole) per forward call. 1 on a CPU: a 512x512 window through an efficient CNN
    # needs about 120 MB of activations, a batch of 8 about 960 MB (fpn-efficientnet-lite0, 21 classes), and batch 1
    # ran the 8000x6000 slide faster (76 s against 86 s at 2; benchmarks/results/predict_memory.md). On a GPU, more.
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SeglabError(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if not (isinstance(self.overlap, (int, float)) and 0.0 <= self.overlap < 1.0):
            raise SeglabError(f"--overlap {self.overlap!r}: must be in [0, 1) (0.25: a quarter of each window "
                              "is seen twice)")
        if not self.scales or any(not (isinstance(s, (int, float)) and 0.0 < s <= 8.0) for s in self.scales):
            raise SeglabError(f"--tta scales {list(self.scales)}: each must be in (0, 8], e.g. scales=0.75,1.0,1.25")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise SeglabError(f"batch_size must be a positive integer, not {self.batch_size!r}")

    @property
    def views(self) -> list[tuple[float, bool]]:
        """(scale, flipped) of every view averaged."""
        return [(s, f) for s in self.scales for f in ((False, True) if self.flip else (False,))]

    def describe(self) -> str:
        """e.g. "slide (overlap 0.25), tta flip,scales=0.75,1,1.25"."""
        tta = (["flip"] if self.flip else []) + ([] if self.scales == (1.0,) else
                                                  [f"scales={','.join(f'{s:g}' for s in self.scales)}"])
        return (self.mode + (f" (overlap {self.overlap:g})" if self.mode == "slide" else "")
                + (f", tta {','.join(tta)}" if tta else ""))


def parse_tta(text: str | None) -> tuple[bool, tuple[float, ...]]:
    """`--tta` text -> (flip, scales): "flip", "scales=0.75,1.0,1.25", "flip,scales=0.75,1,1.25"; None/"" -> off."""
    if not text or text.strip() in ("", "none", "off"):
        return False, (1.0,)
    flip, scales = False, (1.0,)
    head, _, rest = text.partition("scales=")
    for part in filter(None, (p.strip() for p in head.split(","))):
        if part != "flip":
            raise SeglabError(f"--tta {text!r}: unknown part {part!r}; write flip, scales=0.75,1.0,1.25 or both "
                              "(flip,scales=...)")
        flip = True
    if _:
        try:
            scales = tuple(float(s) for s in rest.split(",") if s.strip())
        except ValueError:
            raise SeglabError(f"--tta {text!r}: scales must be numbers, e.g. scales=0.75,1.0,1.25") from None
        if not scales:
            raise SeglabError(f"--tta {text!r}: scales= needs at least one number")
    return flip, scales


# ---- resizing logits (torch's F.interpolate(mode="bilinear", align_corners=False) rule, without antialias)

def _source_rows(n_in: int, n_out: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For output samples start..stop-1 of an axis resized n_in -> n_out: the two source indices and the weight."""
    src = np.maximum((np.arange(start, stop, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def _resize_axis(x: np.ndarray, n_out: int, axis: int, n_in: int | None = None, start: int = 0,
                 stop: int | None = None, offset: int = 0) -> np.ndarray:
    """Output samples start..stop of `axis` resized from n_in (default x's length) to n_out; x holds source samples
    offset.. of that axis (a band of a larger map)."""
    n_in = x.shape[axis] if n_in is None else n_in
    i0, i1, w = _source_rows(n_in, n_out, start, n_out if stop is None else stop)
    shape = [1] * x.ndim
    shape[axis] = len(w)
    w = w.reshape(shape)
    return np.take(x, i0 - offset, axis=axis) * (1 - w) + np.take(x, i1 - offset, axis=axis) * w


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (C, h, w) float maps to (C, H, W) like torch's F.interpolate(mode="bilinear", align_corners=False)."""
    return _resize_axis(_resize_axis(x, size[0], 1), size[1], 2)


def upsampled_argmax(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """argmax over classes of (C, h, w) logits resized bilinearly to (H, W): a uint8 mask, in row chunks."""
    return segment_views([[(_ArrayRows(logits), False)]], [size])[0]


def softmax(x: np.ndarray, axis: int = 0) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---- what the model sees

def to_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """An RGB PIL image or an (H, W, 3) uint8 array -> (H, W, 3) uint8."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise SeglabError(f"expected an (H, W, 3) uint8 image, not {image.dtype} {image.shape}")
    return image


def view_image(image: np.ndarray, size: tuple[int, int], interpolation: str, flip: bool) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 resized to size (by `interpolation`), flipped left-right if asked; the
    image itself (no copy) when neither is needed: a large photo is held once."""
    if image.shape[:2] != tuple(size):
        resample = check_interpolation(interpolation)
        image = np.asarray(Image.fromarray(image).resize((size[1], size[0]), resample), dtype=np.uint8)
    return np.ascontiguousarray(image[:, ::-1]) if flip else image


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Offsets of windows covering 0..length (length >= window): every `stride`, the last one flush with the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


def gaussian_weight(size: tuple[int, int], sigma_scale: float = GAUSSIAN_SIGMA) -> np.ndarray:
    """(h, w) float32 Gaussian importance map, 1 at the centre; its floor stays positive so edges still count."""
    axes = []
    for n in size:
        c = (n - 1) / 2.0
        sigma = max(n * sigma_scale, 1e-3)
        axes.append(np.exp(-0.5 * ((np.arange(n) - c) / sigma) ** 2))
    w = np.outer(axes[0], axes[1]).astype(np.float32)
    return np.maximum(w / w.max(), 1e-3)


class _ArrayRows:
    """A view's logits held whole (C, h, w); rows(lo, hi) slices them."""

    def __init__(self, logits: np.ndarray):
        self.logits = logits
        self.height, self.width = logits.shape[1:]

    def rows(self, lo: int, hi: int) -> np.ndarray:
        return self.logits[:, lo:hi]


class _SlideRows:
    """A view's logits blended from windows, computed lazily band by band: rows(lo, hi) runs the windows needed
    for rows below hi and forgets rows above lo. Calls must come with lo and hi that never decrease.

    Memory: one band of window height by the view's width (C floats per pixel) and a few rows kept from the band
    before; finished rows are normalised in place and handed out as a view of the band until it moves on.
    """

    def __init__(self, view: np.ndarray, forward: Forward, window: tuple[int, int], overlap: float, batch_size: int):
        self.view = view  # (h, w, 3) uint8
        self.forward = forward
        self.height, self.width = view.shape[:2]
        self.wh, self.ww = window
        self.ph, self.pw = max(self.height, self.wh), max(self.width, self.ww)  # padded with zeros when smaller
        self.ys = window_starts(self.ph, self.wh, max(1, int(self.wh * (1 - overlap))))
        self.xs = window_starts(self.pw, self.ww, max(1, int(self.ww * (1 - overlap))))
        self.batch_size = batch_size
        self.weight = gaussian_weight(window)  # (wh, ww)
        self.k = 0  # next window row
        self.acc: np.ndarray | None = None  # (C, wh, pw): weighted logits of rows ys[k-1] .. ys[k-1] + wh
        self.wsum = np.zeros((self.wh, self.pw), dtype=np.float32)
        self.pieces: list[tuple[int, np.ndarray]] = []  # finished rows (first row, (C, n, w)); the last may be a
        self.last_is_band = False  # view of acc's top rows, which the next window row overwrites
        self.shift = 0  # rows acc must move up before the next window row
        self.done = 0  # rows below this are finished

    def _window(self, y: int, x: int) -> np.ndarray:
        patch = np.zeros((3, self.wh, self.ww), dtype=np.float32)
        part = self.view[y:y + self.wh, x:x + self.ww].transpose(2, 0, 1)  # (3, <= wh, <= ww)
        patch[:, :part.shape[1], :part.shape[2]] = part
        return patch / np.float32(255.0)  # (3, wh, ww)

    def _move_band(self, lo: int) -> None:
        """Free acc for the next window row: keep (a copy of) the finished rows still needed, move the open rows up."""
        if self.last_is_band:
            y, band = self.pieces[-1]
            start = max(y, lo)
            self.pieces[-1] = (start, band[:, start - y:].copy())
            self.last_is_band = False
        n = self.shift
        if self.acc is not None and n:
            if n < self.wh:  # the rows still open move to the top, in place (a copy of only those rows)
                self.acc[:, : self.wh - n] = self.acc[:, n:].copy()
                self.wsum[: self.wh - n] = self.wsum[n:].copy()
            self.acc[:, self.wh - n:] = 0
            self.wsum[self.wh - n:] = 0
        self.shift = 0

    def _next_row(self) -> None:
        y = self.ys[self.k]
        for i in range(0, len(self.xs), self.batch_size):
            xs = self.xs[i:i + self.batch_size]
            logits = self.forward(np.stack([self._window(y, x) for x in xs]))  # (b, C, wh, ww)
            if self.acc is None:
                self.acc = np.zeros((logits.shape[1], self.wh, self.pw), dtype=np.float32)
            for x, lg in zip(xs, logits):
                self.acc[:, :, x:x + self.ww] += lg * self.weight
                self.wsum[:, x:x + self.ww] += self.weight
        self.k += 1
        end = self.ys[self.k] if self.k < len(self.ys) else self.ph
        n = end - y  # rows y..end are finished: later windows start at or below `end`
        keep = max(0, min(n, self.height - y))  # rows of the image, not of the padding below it
        if keep:
            band = self.acc[:, :keep, : self.width]
            band /= self.wsum[None, :keep, : self.width]  # in place: these rows get no more windows
            self.pieces.append((y, band))
            self.last_is_band = True
        self.shift = n
        self.done = min(end, self.height)

    def rows(self, lo: int, hi: int) -> np.ndarray:
        self.pieces = [(y, b) for y, b in self.pieces if y + b.shape[1] > lo]
        self.last_is_band = self.last_is_band and bool(self.pieces)
        while self.done < hi:
            self._move_band(lo)
            self._next_row()
        parts = [b[:, max(0, lo - y): hi - y] for y, b in self.pieces if y < hi]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


RowSource = _ArrayRows | _SlideRows


def _whole_views(arrays: list[np.ndarray], forward: Forward, geometry: Geometry, scale: float, flip: bool,
                 batch_size: int) -> list[_ArrayRows]:
    """Each image's view logits in whole mode; views of one padded shape share a forward call."""
    views = [view_image(a, geometry.view_size(a.shape[0], a.shape[1], scale), geometry.interpolation, flip)
             .transpose(2, 0, 1) for a in arrays]  # (3, h, w) each
    m = 1 if geometry.fixed or geometry.protocol == "article" else PAD_MULTIPLE  # squares: one shape already
    padded = [(math.ceil(v.shape[1] / m) * m, math.ceil(v.shape[2] / m) * m) for v in views]
    out: list[_ArrayRows | None] = [None] * len(views)
    for shape in dict.fromkeys(padded):
        members = [i for i, p in enumerate(padded) if p == shape]
        for start in range(0, len(members), batch_size):
            group = members[start:start + batch_size]
            x = np.zeros((len(group), 3, *shape), dtype=np.float32)  # zeros: as training pads its crops
            for j, i in enumerate(group):
                x[j, :, :views[i].shape[1], :views[i].shape[2]] = views[i]
            x /= np.float32(255.0)
            logits = forward(x)  # (b, C, H, W)
            for j, i in enumerate(group):
                out[i] = _ArrayRows(np.ascontiguousarray(logits[j, :, :views[i].shape[1], :views[i].shape[2]]))
    return out  # type: ignore[return-value]


def view_sources(images: list[Image.Image | np.ndarray], forward: Forward, geometry: Geometry,
                 config: InferenceConfig) -> list[list[tuple[RowSource, bool]]]:
    """For every image, one (logits rows, flipped) per view of config; slide views are computed on use."""
    arrays = [to_array(im) for im in images]
    sources: list[list[tuple[RowSource, bool]]] = [[] for _ in arrays]
    for scale, flip in config.views:
        if config.mode == "whole":
            for i, src in enumerate(_whole_views(arrays, forward, geometry, scale, flip, config.batch_size)):
                sources[i].append((src, flip))
        else:
            for i, a in enumerate(arrays):
                view = view_image(a, geometry.view_size(a.shape[0], a.shape[1], scale), geometry.interpolation, flip)
                sources[i].append((_SlideRows(view, forward, geometry.window, config.overlap, config.batch_size),
                                   flip))
    return sources


def score_chunks(views: list[tuple[RowSource, bool]], size: tuple[int, int]) -> Iterator[tuple[int, np.ndarray, bool]]:
    """(first row, scores (C, n, W), probabilities?) for row chunks of an image of `size`: the logits of the one
    view, or the mean softmax of several, resized to the image."""
    H, W = size
    num_classes = views[0][0].rows(0, 1).shape[0]
    widest = max(W, *(src.width for src, _ in views))
    chunk = max(1, CHUNK_FLOATS // (num_classes * widest))  # rows per chunk: C x rows x W floats at most
    for r0 in range(0, H, chunk):
        r1 = min(H, r0 + chunk)
        acc = None
        for src, flip in views:
            i0, i1, _ = _source_rows(src.height, H, r0, r1)
            lo, hi = int(i0[0]), int(i1[-1]) + 1  # the view's rows that output rows r0..r1 interpolate
            band = src.rows(lo, hi)  # (C, hi - lo, w)
            out = _resize_axis(band, H, 1, n_in=src.height, start=r0, stop=r1, offset=lo)  # (C, r1 - r0, w)
            out = _resize_axis(out, W, 2)  # (C, r1 - r0, W)
            if flip:
                out = out[:, :, ::-1]
            if len(views) == 1:
                acc = out
            else:
                p = softmax(out, axis=0)
                acc = p if acc is None else acc + p
        assert acc is not None
        many = len(views) > 1
        yield r0, (acc / len(views) if many else acc), many


def segment_views(sources: list[list[tuple[RowSource, bool]]], sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """The uint8 mask (H, W) of each image from its views' logits."""
    masks = []
    for views, size in zip(sources, sizes):
        mask = np.empty(size, dtype=np.uint8)
        for r0, scores, _ in score_chunks(views, size):
            mask[r0:r0 + scores.shape[1]] = scores.argmax(0)
        masks.append(mask)
    return masks


def segment(images: list[Image.Image | np.ndarray], forward: Forward, geometry: Geometry,
            config: InferenceConfig | None = None) -> list[np.ndarray]:
    """Class-id masks (H, W) uint8, each at its image's own size."""
    config = config or InferenceConfig()
    if not images:
        return []
    sizes = [(im.size[1], im.size[0]) if isinstance(im, Image.Image) else im.shape[:2] for im in images]
    return segment_views(view_sources(images, forward, geometry, config), sizes)


__all__ = ["CHUNK_FLOATS", "MODES", "PAD_MULTIPLE", "PROTOCOLS", "Forward", "Geometry", "InferenceConfig",
           "gaussian_weight", "parse_tta", "resize_bilinear", "score_chunks", "segment", "segment_views", "softmax",
           "to_array", "upsampled_argmax", "view_image", "view_sources", "window_starts"]
