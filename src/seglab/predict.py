"""Inference on images of any size: batched at the model's size, logits resized back, masks and overlays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from .data.cache import INTERPOLATIONS
from .data.io import IMAGE_SUFFIXES, list_images, read_image
from .errors import SeglabError
from .viz import overlay


@dataclass
class Prediction:
    path: Path
    mask: np.ndarray  # (H, W) uint8 class ids at the image's original size
    image: Image.Image


def _expand(inputs: Iterable[str | Path]) -> list[Path]:
    paths: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise SeglabError(f"no images in folder {p} (looked for {', '.join(IMAGE_SUFFIXES)})")
            paths += found
        elif p.exists():
            paths.append(p)
        else:
            raise SeglabError(f"image not found: {p}")
    return paths


@torch.inference_mode()
def predict_images(
    model: nn.Module,
    images: list[Image.Image],
    image_size: int,
    interpolation: str = "nearest",
    device: torch.device | str | None = None,
) -> list[np.ndarray]:
    """Class-id masks (H, W) uint8 at each image's own size: resize to the model's size, predict, resize logits back."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    x = torch.stack([
        torch.from_numpy(np.array(im.resize((image_size, image_size), INTERPOLATIONS[interpolation]))).permute(2, 0, 1)
        for im in images
    ]).to(device).float().div_(255.0)  # (B, 3, S, S)
    logits = model(x).float()  # (B, C, S, S)
    masks = []
    for im, lg in zip(images, logits):
        w, h = im.size
        up = F.interpolate(lg[None], size=(h, w), mode="bilinear", align_corners=False)  # (1, C, H, W)
        masks.append(up[0].argmax(0).byte().cpu().numpy())
    return masks


def predict(
    checkpoint: str | Path,
    inputs: Iterable[str | Path],
    out_dir: str | Path | None = None,
    batch_size: int = 16,
    device: str = "auto",
    quiet: bool = False,
) -> list[Prediction]:
    """Predict every image (files or folders of images) with a checkpoint (or a run directory's best).

    With out_dir, writes <stem>_mask.png (class ids) and <stem>_overlay.png for each image, at its original size.
    """
    from .checkpoint import load_model
    from .train import resolve_device

    dev = resolve_device(device)
    model, header = load_model(checkpoint, dev)
    size = int(header.get("image_size", header["model"]["image_size"]))
    interpolation = header.get("interpolation", "nearest")
    num_classes = int(header["model"]["num_classes"])
    paths = _expand(inputs)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    results: list[Prediction] = []
    for start in tqdm(range(0, len(paths), batch_size), desc="predict", disable=quiet):
        chunk = paths[start:start + batch_size]
        images = [read_image(p) for p in chunk]
        for p, im, mask in zip(chunk, images, predict_images(model, images, size, interpolation, dev)):
            results.append(Prediction(p, mask, im))
            if out_dir is not None:
                Image.fromarray(mask).save(out_dir / f"{p.stem}_mask.png")
                overlay(im, mask, num_classes).save(out_dir / f"{p.stem}_overlay.png")
    return results
