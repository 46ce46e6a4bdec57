"""The Segmenter protocol: what `seglab predict` and `seglab serve` need from a model, whatever runs it; its
PyTorch backend; and load_segmenter, which picks the backend for a path.

    .onnx file                        onnx_runtime.OnnxSegmenter (numpy + ONNX Runtime; torch is never imported)
    checkpoint or run directory       TorchSegmenter (PyTorch)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image

from .data.io import INTERPOLATIONS
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

    @property
    def num_classes(self) -> int: ...

    def predict_masks(self, images: list[Image.Image]) -> list[np.ndarray]:
        """Class-id masks (H, W) uint8 at each image's own size."""
        ...


def predict_images(
    model: nn.Module,
    images: list[Image.Image],
    image_size: int,
    interpolation: str = "nearest",
    device: torch.device | str | None = None,
) -> list[np.ndarray]:
    """Class-id masks (H, W) uint8 at each image's own size: resize to the model's size, predict, resize logits back."""
    import torch
    import torch.nn.functional as F

    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        x = torch.stack([
            torch.from_numpy(np.array(im.resize((image_size, image_size), INTERPOLATIONS[interpolation])))
            .permute(2, 0, 1)
            for im in images
        ]).to(device).float().div_(255.0)  # (B, 3, S, S)
        logits = model(x).float()  # (B, C, S, S)
        masks = []
        for im, lg in zip(images, logits):
            w, h = im.size
            up = F.interpolate(lg[None], size=(h, w), mode="bilinear", align_corners=False)  # (1, C, H, W)
            masks.append(up[0].argmax(0).byte().cpu().numpy())
    return masks


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
        n = int(spec["num_classes"])
        self.class_names = list(header.get("class_names") or [f"class {i}" for i in range(n)])
        self.colors = palette(n)[:n].tolist()
        self.parameters = sum(p.numel() for p in self.model.parameters())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def predict_masks(self, images: list[Image.Image]) -> list[np.ndarray]:
        if not images:
            return []
        return predict_images(self.model, images, self.image_size, self.interpolation, self.device)


def load_segmenter(path: str | os.PathLike[str], device: str = "auto") -> Segmenter:
    """An OnnxSegmenter for an .onnx file (no torch), else a TorchSegmenter for a checkpoint or run directory."""
    if str(path).endswith(".onnx"):
        from .onnx_runtime import OnnxSegmenter

        return OnnxSegmenter(path)
    return TorchSegmenter(path, device=device)


__all__ = ["Segmenter", "TorchSegmenter", "load_segmenter", "predict_images"]
