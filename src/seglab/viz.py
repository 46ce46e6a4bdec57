"""Figures: image / truth / prediction grids, the progress GIF, training curves, overlays."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

# pet, background, border first (the Oxford-IIIT Pet trimap classes), then distinct colours for more classes.
_BASE = [(255, 140, 0), (30, 30, 60), (245, 245, 245), (0, 160, 255), (220, 20, 60), (60, 179, 113),
         (148, 0, 211), (255, 215, 0), (0, 206, 209), (199, 21, 133)]
IGNORE_COLOR = (128, 128, 128)


def palette(num_classes: int) -> np.ndarray:
    """A (max(num_classes, 10), 3) uint8 colour table; class c is drawn in palette[c]."""
    rng = np.random.default_rng(0)
    extra = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(max(0, num_classes - len(_BASE)))]
    return np.array(_BASE + extra, dtype=np.uint8)


def colorize(mask: np.ndarray | torch.Tensor, num_classes: int) -> np.ndarray:
    """Class ids (H, W) -> RGB (H, W, 3) uint8; 255 (ignore) is gray."""
    m = mask.cpu().numpy() if torch.is_tensor(mask) else np.asarray(mask)
    pal = palette(num_classes)
    out = pal[np.clip(m, 0, len(pal) - 1)]
    out[m == 255] = IGNORE_COLOR
    return out


def overlay(image: Image.Image, mask: np.ndarray, num_classes: int, alpha: float = 0.45) -> Image.Image:
    """The image with its class mask blended over it (same size)."""
    color = Image.fromarray(colorize(mask, num_classes)).resize(image.size, Image.Resampling.NEAREST)
    return Image.blend(image.convert("RGB"), color, alpha)


def _to_rgb(images: torch.Tensor) -> np.ndarray:
    x = images.detach().float().clamp(0, 1).mul(255).round().byte().cpu()
    return x.permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)


def _tile(tiles: Sequence[np.ndarray], per_row: int, pad: int = 2) -> np.ndarray:
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + per_row - 1) // per_row
    canvas = np.full((rows * (h + pad) + pad, per_row * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, per_row)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = t
    return canvas


def grid_image(
    images: torch.Tensor,
    truth: torch.Tensor,
    pred: torch.Tensor,
    num_classes: int,
    per_row: int = 7,
    title: str = "",
    min_tile: int = 96,
) -> Image.Image:
    """The article's Figure 1: panels of images, ground truth and predictions, `per_row` per row."""
    h = images.shape[-2]
    scale = max(1, int(np.ceil(min_tile / h)))
    up = lambda a: a.repeat(scale, 0).repeat(scale, 1)  # noqa: E731  nearest upscale for small tiles
    panels = [
        ("images", [up(t) for t in _to_rgb(images)]),
        ("truth", [up(colorize(m, num_classes)) for m in truth]),
        ("prediction", [up(colorize(m, num_classes)) for m in pred]),
    ]
    parts = []
    for name, tiles in panels:
        body = _tile(tiles, per_row)
        label = Image.new("RGB", (body.shape[1], 16), (255, 255, 255))
        ImageDraw.Draw(label).text((4, 2), f"{title}  {name}".strip(), fill=(0, 0, 0))
        parts += [np.asarray(label), body]
    return Image.fromarray(np.concatenate(parts, axis=0))


def save_gif(frames: Sequence[str | Path], path: str | Path, ms_per_frame: int = 400) -> None:
    """The article's Figure 8: per-epoch grids as one animated GIF (the last frame held longer)."""
    imgs = [Image.open(f).convert("RGB") for f in frames]
    if not imgs:
        return
    durations = [ms_per_frame] * (len(imgs) - 1) + [ms_per_frame * 5]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=durations, loop=0)


def save_curves(rows: list[dict[str, float]], path: str | Path) -> None:
    """Loss and accuracy curves over epochs from metrics.csv rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(epochs, [float(r["train_loss"]) for r in rows], label="train loss")
    a.plot(epochs, [float(r["val_loss"]) for r in rows], label="val loss")
    a.set_xlabel("epoch")
    a.legend()
    b.plot(epochs, [float(r["pixel_accuracy"]) for r in rows], label="pixel accuracy")
    b.plot(epochs, [float(r["miou"]) for r in rows], label="mIoU")
    b.set_xlabel("epoch")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_shape_journey(rows: Sequence, path: str | Path, title: str = "") -> None:
    """The article's Figure 7 as a picture: one box per step (name, module, output shape), top to bottom.

    rows are seglab.trace.TraceRow; consecutive blocks with the same shapes are drawn as one box ("blocks.0-11").
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    merged: list[tuple[str, str, tuple, tuple]] = []
    for r in rows:
        prev = merged[-1] if merged else None
        base = r.step.rsplit(".", 1)[0]
        same_module = prev and prev[1] == r.module and prev[3] == r.output_shape
        if same_module and "." in r.step and prev[0].split(".")[0] == base:
            first = prev[0].split("-")[0]
            merged[-1] = (f"{first}-{r.step.rsplit('.', 1)[1]}", r.module, prev[2], r.output_shape)
        else:
            merged.append((r.step, r.module, r.input_shape, r.output_shape))
    fmt = lambda s: "(" + ", ".join(map(str, s)) + ")"  # noqa: E731
    fig, ax = plt.subplots(figsize=(5.5, 0.62 * len(merged) + 0.6))
    ax.set_xlim(0, 1)
    ax.set_ylim(len(merged), -0.8)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    for i, (step, module, _, out) in enumerate(merged):
        ax.text(0.5, i, f"{step}  {module}\n{fmt(out)}", ha="center", va="center", fontsize=8, family="monospace",
                bbox=dict(boxstyle="round,pad=0.35", facecolor="#e8f0fe", edgecolor="#4063a8"))
        if i:
            ax.annotate("", xy=(0.5, i - 0.32), xytext=(0.5, i - 0.68), arrowprops=dict(arrowstyle="->", lw=1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
