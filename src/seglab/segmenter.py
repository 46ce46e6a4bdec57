"""The Segmenter protocol: what `seglab predict` and `seglab serve` need from a model, whatever runs it; its
PyTorch backend; and load_segmenter, which picks the backend for a path. Every backend hands inference.py a
forward function, so whole / slide / TTA and the resize back to each image's size are one code for all of them.

    .onnx file                        onnx_runtime.OnnxSegmenter (numpy + ONNX Runtime; torch is never imported)
    checkpoint or run directory       TorchSegmenter (PyTorch)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image

from .inference import Geometry, InferenceConfig, segment
from .palette import palette

if TYPE_CHECKING:
    import torch
    from torch import nn


class Segmenter(Protocol):
    """What `seglab predict` and `seglab serve` need from a model, whatever runs it."""

    name: str
    class_names: list[str]
    colors: list[list[int]]
    image_size: int
    interpolation: str
    parameters: int
    backend: str
    geometry: Geometry  # how the model saw images in training (inference.py)

    @property
    def num_classes(self) -> int: ...

    def predict_masks(self, images: list[Image.Image | np.ndarray],
                      config: InferenceConfig | None = None) -> list[np.ndarray]:
        """Class-id masks (H, W) uint8 at each image's own size (config: mode, overlap, TTA; default whole)."""
        ...


def predict_images(
    model: nn.Module,
    images: list[Image.Image],
    geometry: Geometry | int,
    config: InferenceConfig | None = None,
    device: torch.device | str | None = None,
) -> list[np.ndarray]:
    """Class-id masks (H, W) uint8 at each image's own size from a PyTorch model. geometry: how the model saw
    images in training (an int: the article's square of that side)."""
    import torch

    from .evaluate import torch_forward

    if isinstance(geometry, int):
        geometry = Geometry(image_size=geometry, interpolation="nearest")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    return segment(images, torch_forward(model, device), geometry, config)


class TorchSegmenter:
    """A seglab checkpoint (or a run directory's best) on PyTorch."""

    backend = "pytorch"

    def __init__(self, checkpoint: str | Path, device: str = "auto"):
        from .checkpoint import load_model
        from .device import resolve_device

        self.device = resolve_device(device)
        self.model, header = load_model(checkpoint, self.device)
        spec = header["model"]
        self.name = spec["name"]
        self.image_size = int(header.get("image_size", spec["image_size"]))
        self.interpolation = header.get("interpolation", "nearest")
        # A checkpoint from before the original protocol records no geometry: it was trained on article squares.
        self.geometry = Geometry.from_dict(header.get("geometry") or {"image_size": self.image_size,
                                                                      "interpolation": self.interpolation})
        n = int(spec["num_classes"])
        self.class_names = list(header.get("class_names") or [f"class {i}" for i in range(n)])
        self.colors = palette(n)[:n].tolist()
        self.parameters = sum(p.numel() for p in self.model.parameters())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def predict_masks(self, images: list[Image.Image | np.ndarray],
                      config: InferenceConfig | None = None) -> list[np.ndarray]:
        if not images:
            return []
        return predict_images(self.model, images, self.geometry, config, self.device)


def load_segmenter(path: str | os.PathLike[str], device: str = "auto") -> Segmenter:
    """An OnnxSegmenter for an .onnx file (no torch), else a TorchSegmenter for a checkpoint or run directory."""
    if str(path).endswith(".onnx"):
        from .onnx_runtime import OnnxSegmenter

        return OnnxSegmenter(path)
    return TorchSegmenter(path, device=device)


__all__ = ["Segmenter", "TorchSegmenter", "load_segmenter", "predict_images"]
