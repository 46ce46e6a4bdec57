"""Inference on images of any size: batched at the model's size, logits resized back, masks and overlays."""

from __future__ import annotations

import errno
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


class Predictions(list):
    """The list of Prediction that predict() returns, with .skipped: (path, reason) of files left out by skip_bad."""

    skipped: list[tuple[str, str]]

    def __init__(self, items: Iterable[Prediction] = (), skipped: list[tuple[str, str]] | None = None):
        super().__init__(items)
        self.skipped = list(skipped or [])


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


def _check_stems(paths: list[Path]) -> None:
    """Outputs are named by stem: two inputs with one stem would overwrite each other's masks."""
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen and seen[p.stem].resolve() != p.resolve():
            raise SeglabError(f"{seen[p.stem]} and {p} would both write {p.stem}_mask.png; rename one of them "
                              "or predict them in separate runs")
        seen[p.stem] = p


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
    skip_bad: bool = False,
) -> Predictions:
    """Predict every image (files or folders of images) with a checkpoint (or a run directory's best).

    With out_dir, writes <stem>_mask.png (class ids) and <stem>_overlay.png for each image, at its original size.
    A file that cannot be read stops the run with a message naming it (what was written so far stays); with
    skip_bad=True it is left out and listed in the result's .skipped.
    """
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise SeglabError(f"batch_size must be a positive integer, not {batch_size!r}")
    from .checkpoint import load_model
    from .train import resolve_device

    dev = resolve_device(device)
    model, header = load_model(checkpoint, dev)
    size = int(header.get("image_size", header["model"]["image_size"]))
    interpolation = header.get("interpolation", "nearest")
    num_classes = int(header["model"]["num_classes"])
    paths = _expand(inputs)
    if out_dir is not None:
        _check_stems(paths)
        out_dir = Path(out_dir)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SeglabError(f"cannot create the output folder {out_dir} ({e}); choose another --out") from None
    results = Predictions()
    for start in tqdm(range(0, len(paths), batch_size), desc="predict", disable=quiet):
        chunk, images = [], []
        for p in paths[start:start + batch_size]:
            try:
                images.append(read_image(p))
                chunk.append(p)
            except SeglabError as e:
                if not skip_bad:
                    kept = f"; the {len(results)} mask(s) already written to {out_dir} are kept" if out_dir else ""
                    raise SeglabError(f"{e}{kept}. --skip-bad (skip_bad=True) leaves such files out and lists "
                                      "them.") from None
                results.skipped.append((str(p), str(e)))
        if not images:
            continue
        for p, im, mask in zip(chunk, images, predict_images(model, images, size, interpolation, dev)):
            results.append(Prediction(p, mask, im))
            if out_dir is not None:
                for path, picture in ((out_dir / f"{p.stem}_mask.png", Image.fromarray(mask)),
                                      (out_dir / f"{p.stem}_overlay.png", overlay(im, mask, num_classes))):
                    try:
                        picture.save(path)
                    except OSError as e:
                        path.unlink(missing_ok=True)  # no torn PNG left behind
                        what = "the disk is full" if e.errno == errno.ENOSPC else f"cannot write ({e})"
                        raise SeglabError(f"{what}: {path}; {len(results) - 1} image(s) were done before it") from None
    return results
