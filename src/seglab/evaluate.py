"""evaluate(): exact metrics of a model over a whole split, and the split a run sees.

One pass over the split fills one ConfusionMatrix; every figure (pixel accuracy, the article's IoU, per-class IoU
and Dice, mIoU) comes from it, so they are exact over the split rather than means of per-batch figures. The
result carries the matrix, for confusion.csv and its figure (write_confusion).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import distributed as dist
from .config import TrainConfig
from .data import SegmentationDataset, build_dataset
from .data.augment import to_float
from .device import autocast_for
from .losses import LossFn
from .metrics import IGNORE_INDEX, ConfusionMatrix
from .viz import save_confusion


class EvalResult(dict):
    """evaluate()'s metrics (a dict: pixel_accuracy, article_iou, miou, iou_<class>, dice_<class>, loss) and
    `.matrix`, the ConfusionMatrix they come from (rows: truth, columns: prediction)."""

    def __init__(self, metrics: dict[str, float], matrix: ConfusionMatrix):
        super().__init__(metrics)
        self.matrix = matrix


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    dataset: SegmentationDataset,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    amp: str = "auto",
    quiet: bool = True,
    loss_fn: LossFn | None = None,
) -> EvalResult:
    """Exact metrics over a whole split: pixel accuracy, the article's IoU, per-class IoU and Dice, mIoU and the
    loss (cross-entropy per pixel, or loss_fn's mean over images when given), with the confusion matrix.

    Under torchrun each rank evaluates its shard and the confusion matrices are summed over ranks.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(dataset.num_classes, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    pixels = torch.zeros((), dtype=torch.float64, device=device)
    idx = torch.arange(dist.rank(), len(dataset), dist.world_size())
    for start in tqdm(range(0, len(idx), batch_size), desc="eval", disable=quiet, leave=False):
        b = idx[start:start + batch_size]
        x = to_float(dataset.images[b].to(device, non_blocking=True))  # (B, 3, H, W)
        y = dataset.masks[b].to(device, non_blocking=True).long()  # (B, H, W)
        with autocast_for(device, amp):
            logits = model(x)  # (B, C, H, W)
        if loss_fn is None:
            loss_sum += F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX, reduction="sum").double()
            pixels += (y != IGNORE_INDEX).sum()
        else:
            loss_sum += loss_fn(logits.float(), y).double() * len(b)
            pixels += len(b)
        cm.update(logits, y)
    dist.all_reduce_sum(cm.matrix)
    dist.all_reduce_sum(loss_sum)
    dist.all_reduce_sum(pixels)
    model.train(was_training)
    out = cm.summary(dataset.class_names)
    out["loss"] = (loss_sum / pixels.clamp(min=1)).item()
    return EvalResult(out, cm)


def write_confusion(cm: ConfusionMatrix, class_names: tuple[str, ...], folder: Path, title: str = "") -> None:
    """FOLDER/confusion.csv (pixel counts, rows: truth) and FOLDER/figures/confusion.png (row shares)."""
    cm.to_csv(folder / "confusion.csv", class_names)
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    save_confusion(cm.matrix, class_names, folder / "figures" / "confusion.png",
                   title=f"confusion matrix ({title}; rows: truth)" if title else "")


def load_split(cfg: TrainConfig, split: str, samples: int | None = None,
               image_size: int | None = None) -> SegmentationDataset:
    """One split of cfg.dataset as a run with `cfg` sees it (the first `samples`, at image_size or cfg's size)."""
    options: dict[str, Any] = {}
    if cfg.dataset == "synthetic":
        options = {"seed": cfg.seed} if samples is None else {"count": samples, "seed": cfg.seed}
    if cfg.dataset == "folder":
        options = {"ignore_index": cfg.ignore_index, "mask_format": cfg.masks or None}
    ds = build_dataset(cfg.dataset, split, root=cfg.data_root, download=cfg.download,
                       image_size=image_size or cfg.image_size, interpolation=cfg.interpolation,
                       skip_bad=cfg.skip_bad, quiet=cfg.quiet, **options)
    if samples is not None and cfg.dataset != "synthetic" and samples < len(ds):
        ds = dataclasses.replace(ds, images=ds.images[:samples], masks=ds.masks[:samples], ids=ds.ids[:samples])
    return ds


__all__ = ["EvalResult", "evaluate", "load_split", "write_confusion"]
