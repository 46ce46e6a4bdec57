"""ONNX Runtime inference with numpy and Pillow only: no torch import anywhere on this path.

An .onnx file written by seglab.export_onnx carries what inference needs in its metadata ("seglab.*"): class
names and colours, the training image size, the resize interpolation and the input normalisation. OnnxSegmenter
reads it, resizes images to that size, runs the graph and resizes the logits back to each image's own size with
the same bilinear rule as PyTorch's F.interpolate(align_corners=False), so its masks are those of `seglab predict`
on the checkpoint (up to float rounding at class boundaries).

OnnxSegmenter answers segmenter.Segmenter's calls, as the PyTorch backend does; segmenter.load_segmenter picks
the backend for a path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .data.io import INTERPOLATIONS
from .errors import SeglabError
from .palette import palette


def _resize_axis(x: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """Linear resampling of one axis to n_out samples: half-pixel centres, source coordinates clamped at 0 and at
    the last sample (the rule of torch's F.interpolate(mode="bilinear", align_corners=False), without antialias)."""
    n_in = x.shape[axis]
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    shape = [1] * x.ndim
    shape[axis] = n_out
    w = (src - i0).astype(np.float32).reshape(shape)
    return np.take(x, i0, axis=axis) * (1 - w) + np.take(x, i1, axis=axis) * w


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (C, h, w) float maps to (C, H, W) like torch's F.interpolate(mode="bilinear", align_corners=False)."""
    return _resize_axis(_resize_axis(x, size[0], 1), size[1], 2)


def upsampled_argmax(logits: np.ndarray, size: tuple[int, int], rows_per_chunk: int = 256) -> np.ndarray:
    """argmax over classes of (C, h, w) logits resized bilinearly to (H, W): a uint8 mask, computed in row chunks
    so that a large photo never needs the whole (C, H, W) float map at once."""
    H, W = size
    rows = _resize_axis(logits, H, 1)  # (C, H, w): w is the model's small size
    mask = np.empty((H, W), dtype=np.uint8)
    for start in range(0, H, rows_per_chunk):
        mask[start:start + rows_per_chunk] = _resize_axis(rows[:, start:start + rows_per_chunk], W, 2).argmax(0)
    return mask


def to_input(images: list[Image.Image], image_size: int, interpolation: str) -> np.ndarray:
    """RGB images -> (B, 3, S, S) float32 in [0, 1], each resized to S x S by the recorded interpolation."""
    batch = np.stack([
        np.asarray(im.convert("RGB").resize((image_size, image_size), INTERPOLATIONS[interpolation]), dtype=np.uint8)
        for im in images
    ])  # (B, S, S, 3)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


class OnnxSegmenter:
    """A seglab .onnx file on ONNX Runtime (CPU by default): metadata, batched prediction, masks at each size."""

    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None, providers: list[str] | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise SeglabError("running an .onnx model needs onnxruntime: pip install 'seglab[onnx]'") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise SeglabError(f"ONNX model not found: {self.path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types for bad files
            raise SeglabError(f"ONNX Runtime cannot load {self.path} ({type(e).__name__}: {e})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "seglab.model" not in meta:
            raise SeglabError(f"{self.path} has no seglab metadata; export it with `seglab export` "
                              "(it records the classes, image size and interpolation)")
        try:
            self.name = meta["seglab.model"]
            self.class_names = list(json.loads(meta["seglab.class_names"]))
            self.image_size = int(meta["seglab.image_size"])
            self.interpolation = meta["seglab.interpolation"]
            self.parameters = int(meta.get("seglab.parameters", "0"))
            self.dynamic_hw = meta.get("seglab.dynamic_hw") == "true"
            self.input_name = meta.get("seglab.input", self.session.get_inputs()[0].name)
            n = len(self.class_names)
            self.colors = json.loads(meta["seglab.colors"]) if "seglab.colors" in meta else palette(n)[:n].tolist()
        except (KeyError, ValueError, TypeError) as e:
            raise SeglabError(f"{self.path} has damaged seglab metadata ({type(e).__name__}: {e}); export it "
                              "again") from None
        if self.interpolation not in INTERPOLATIONS:
            raise SeglabError(f"{self.path}: unknown interpolation {self.interpolation!r} in its metadata")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def logits(self, images: list[Image.Image]) -> np.ndarray:
        """(B, C, S, S) float32 logits at the model's size."""
        x = to_input(images, self.image_size, self.interpolation)
        return self.session.run(None, {self.input_name: x})[0]

    def predict_masks(self, images: list[Image.Image]) -> list[np.ndarray]:
        """Class-id masks (H, W) uint8 at each image's own size."""
        if not images:
            return []
        logits = self.logits(images)
        return [upsampled_argmax(lg, (im.size[1], im.size[0])) for im, lg in zip(images, logits)]


__all__ = ["OnnxSegmenter", "resize_bilinear", "to_input", "upsampled_argmax"]
