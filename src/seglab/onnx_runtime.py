"""ONNX Runtime inference with numpy and Pillow only: no torch import anywhere on this path.

An .onnx file written by seglab.export_onnx carries what inference needs in its metadata ("seglab.*"): class
names and colours, the training image size and geometry (how the model saw images: inference.Geometry), the
resize interpolation. OnnxSegmenter reads it and hands the graph to inference.py as a forward function: whole,
slide and TTA, and the resize back to each image's size with PyTorch's F.interpolate(align_corners=False) rule,
are the same code as on PyTorch, so its masks are those of `seglab predict` on the checkpoint (up to float
rounding at class boundaries).

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
from .inference import Geometry, InferenceConfig, resize_bilinear, segment, upsampled_argmax
from .palette import palette


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
            recorded = json.loads(meta["seglab.geometry"]) if "seglab.geometry" in meta else {
                "image_size": self.image_size, "interpolation": self.interpolation}  # older files: article squares
            self.geometry = Geometry.from_dict(recorded, fixed=not self.dynamic_hw)
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

    def forward(self, x: np.ndarray) -> np.ndarray:
        """float32 images (B, 3, h, w) in [0, 1] -> float32 logits (B, C, h, w)."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def predict_masks(self, images: list[Image.Image | np.ndarray],
                      config: InferenceConfig | None = None) -> list[np.ndarray]:
        """Class-id masks (H, W) uint8 at each image's own size (config: mode, overlap, TTA; default whole)."""
        return segment(images, self.forward, self.geometry, config)


__all__ = ["OnnxSegmenter", "resize_bilinear", "upsampled_argmax"]
