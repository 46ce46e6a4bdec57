"""Figures: image / truth / prediction grids, the progress GIF, training curves, overlays."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from .palette import IGNORE_COLOR, colorize_array, overlay, palette  # noqa: F401  (re-exported: viz's public names)


def colorize(mask: np.ndarray | torch.Tensor, num_classes: int, colors: np.ndarray | None = None) -> np.ndarray:
    """Class ids (H, W) -> RGB (H, W, 3) uint8 (class c in colors[c], default palette()); 255 (ignore) is gray."""
    return colorize_array(mask.cpu().numpy() if torch.is_tensor(mask) else mask, num_classes, colors)


def _to_rgb(images: torch.Tensor) -> np.ndarray:
    x = images.detach().float().clamp(0, 1).mul(255).round().byte().cpu()
    return x.permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)


def tile(tiles: Sequence[np.ndarray], per_row: int, pad: int = 2) -> np.ndarray:
    """Images (H, W, 3) uint8 of one size in a grid, per_row to a row, on white with `pad` pixels between."""
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
    return panels_image(images, truth, [("prediction", pred)], num_classes, per_row, title, min_tile)


def panels_image(
    images: torch.Tensor,
    truth: torch.Tensor,
    predictions: Sequence[tuple[str, torch.Tensor]],
    num_classes: int,
    per_row: int = 7,
    title: str = "",
    min_tile: int = 96,
) -> Image.Image:
    """Figure 1's layout with any number of prediction panels: images, truth, then one labelled panel of class-id
    masks (N, H, W) per entry of `predictions`, each `per_row` tiles a row, small tiles enlarged by nearest."""
    h = images.shape[-2]
    scale = max(1, int(np.ceil(min_tile / h)))
    up = lambda a: a.repeat(scale, 0).repeat(scale, 1)  # noqa: E731  nearest upscale for small tiles
    panels = [("images", [up(t) for t in _to_rgb(images)]), ("truth", [up(colorize(m, num_classes)) for m in truth])]
    panels += [(name, [up(colorize(m, num_classes)) for m in pred]) for name, pred in predictions]
    parts = []
    for name, tiles in panels:
        body = tile(tiles, per_row)
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
    scored = [r for r in rows if r.get("val_loss") not in ("", None)]  # --eval-every N leaves epochs unscored
    at = [int(r["epoch"]) for r in scored]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(epochs, [float(r["train_loss"]) for r in rows], label="train loss")
    a.plot(at, [float(r["val_loss"]) for r in scored], label="val loss")
    a.set_xlabel("epoch")
    a.legend()
    b.plot(at, [float(r["pixel_accuracy"]) for r in scored], label="pixel accuracy")
    b.plot(at, [float(r["miou"]) for r in scored], label="mIoU")
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


def save_confusion(matrix: np.ndarray | torch.Tensor, class_names: Sequence[str], path: str | Path,
                   title: str = "") -> None:
    """The confusion matrix as a PNG: rows = truth, columns = prediction, each row as shares of its pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = matrix.cpu().numpy() if torch.is_tensor(matrix) else np.asarray(matrix)
    m = m.astype(np.float64)
    rows = m.sum(1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)  # (C, C) rows sum to 1 (or 0 when absent)
    c = len(class_names)
    side = min(14.0, 4.5 + 0.45 * c)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(c), labels=list(class_names), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(c), labels=[f"{n} (absent)" if rows[i, 0] == 0 else n for i, n in enumerate(class_names)],
                  fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    if c <= 25:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, f"{100 * share[i, j]:.0f}%", ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the row")
    ax.set_title(title or "confusion matrix (rows: truth)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def legend(class_names: Sequence[str], colors: np.ndarray | Sequence[Sequence[int]], width: int) -> Image.Image:
    """A strip of colour swatches with class names (plus the ignore colour), wrapped to `width` pixels."""
    entries = [(str(n), tuple(int(v) for v in colors[i])) for i, n in enumerate(class_names)]
    entries.append(("ignore", IGNORE_COLOR))
    cell = max(90, 14 + 7 * max(len(n) for n, _ in entries))
    per_row = max(1, width // cell)
    rows = (len(entries) + per_row - 1) // per_row
    img = Image.new("RGB", (width, rows * 18 + 4), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for k, (name, color) in enumerate(entries):
        r, c = divmod(k, per_row)
        x, y = 4 + c * cell, 3 + r * 18
        draw.rectangle([x, y, x + 12, y + 12], fill=color, outline=(0, 0, 0))
        draw.text((x + 17, y), name, fill=(0, 0, 0))
    return img
