"""evaluate(): exact metrics of a model over a whole split, and the split a run sees.

One pass over the split fills one ConfusionMatrix; every figure (pixel accuracy, the article's IoU, per-class IoU
and Dice, mIoU) comes from it, so they are exact over the split rather than means of per-batch figures. The
result carries the matrix, for confusion.csv and its figure (write_confusion).

Two protocols, by the split's type: a SegmentationDataset (the article's) is scored on its resized squares; an
ImageStore (the original protocol) is scored at the masks' own size: each image goes through the model as the
run's Geometry says (whole or slide, inference.py) and the logits are resized back to the mask, in row chunks, so
the matrix of a split sums to its labelled pixels at their original size.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import distributed as dist
from .config import TrainConfig
from .data import ImageStore, SegmentationDataset, build_dataset
from .data.augment import to_float
from .device import autocast_for
from .inference import Forward, Geometry, InferenceConfig, score_chunks, view_sources
from .losses import LossFn
from .metrics import IGNORE_INDEX, ConfusionMatrix
from .viz import save_confusion


class EvalResult(dict):
    """evaluate()'s metrics (a dict: pixel_accuracy, article_iou, miou, iou_<class>, dice_<class>, loss) and
    `.matrix`, the ConfusionMatrix they come from (rows: truth, columns: prediction)."""

    def __init__(self, metrics: dict[str, float], matrix: ConfusionMatrix, protocol: str = "article"):
        super().__init__(metrics)
        self.matrix = matrix
        self.protocol = protocol  # "article" (resized squares), "original-whole" or "original-slide"


def torch_forward(model: nn.Module, device: torch.device, amp: str = "auto") -> Forward:
    """inference.py's forward for a PyTorch model: float32 (B, 3, h, w) numpy -> float32 (B, C, h, w) numpy."""
    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), autocast_for(device, amp):
            logits = model(torch.from_numpy(x).to(device))  # (B, C, h, w)
        return logits.float().cpu().numpy()

    return forward


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    dataset: SegmentationDataset | ImageStore,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    amp: str = "auto",
    quiet: bool = True,
    loss_fn: LossFn | None = None,
    geometry: Geometry | None = None,
    inference: InferenceConfig | None = None,
) -> EvalResult:
    """Exact metrics over a whole split: pixel accuracy, the article's IoU, per-class IoU and Dice, mIoU and the
    loss (cross-entropy per pixel, or loss_fn's mean over images when given), with the confusion matrix.

    An ImageStore is scored at the masks' own size, the model seeing each image as `geometry` says (default: the
    article's square at the model's image_size) in `inference`'s mode; its loss is the cross-entropy per labelled
    pixel there (loss_fn is not used). Under torchrun each rank evaluates its shard and the confusion matrices are
    summed over ranks.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if isinstance(dataset, ImageStore):
        if geometry is None:
            geometry = Geometry(image_size=int(model.seglab_spec["image_size"]))
        return _evaluate_original(model, dataset, geometry, inference or InferenceConfig(), batch_size, device, amp,
                                  quiet)
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


def _evaluate_original(model: nn.Module, store: ImageStore, geometry: Geometry, config: InferenceConfig,
                       batch_size: int, device: torch.device, amp: str, quiet: bool) -> EvalResult:
    was_training = model.training
    model.eval()
    forward = torch_forward(model, device, amp)
    C = store.num_classes
    matrix = np.zeros(C * C, dtype=np.int64)
    loss_sum, pixels = 0.0, 0
    idx = list(range(dist.rank(), len(store), dist.world_size()))
    for start in tqdm(range(0, len(idx), batch_size), desc="eval", disable=quiet, leave=False):
        batch = idx[start:start + batch_size]
        images = [np.ascontiguousarray(store.image(i).transpose(1, 2, 0)) for i in batch]  # (h, w, 3) each
        for i, views in zip(batch, view_sources(images, forward, geometry, config)):
            mask = store.mask(i)  # (h, w): the label at its own size
            for r0, scores, probs in score_chunks(views, mask.shape):  # scores (C, n, w)
                y = mask[r0:r0 + scores.shape[1]].astype(np.int64)
                valid = y != IGNORE_INDEX
                yv = y[valid]
                sv = scores[:, valid]  # (C, labelled pixels of the chunk)
                matrix += np.bincount(yv * C + sv.argmax(0), minlength=C * C)
                picked = sv[yv, np.arange(len(yv))]
                if probs:
                    loss_sum -= float(np.log(np.maximum(picked, 1e-12)).sum())
                else:  # cross-entropy from logits: logsumexp - the true class's logit
                    top = sv.max(0)
                    loss_sum += float((np.log(np.exp(sv - top).sum(0)) + top - picked).sum())
                pixels += len(yv)
    cm = ConfusionMatrix(C, device=device)
    cm.matrix = torch.from_numpy(matrix.reshape(C, C)).to(device)
    totals = torch.tensor([loss_sum, float(pixels)], dtype=torch.float64, device=device)
    dist.all_reduce_sum(cm.matrix)
    dist.all_reduce_sum(totals)
    model.train(was_training)
    out = cm.summary(store.class_names)
    out["loss"] = (totals[0] / totals[1].clamp(min=1)).item()
    return EvalResult(out, cm, protocol=f"original-{config.mode}")


def write_confusion(cm: ConfusionMatrix, class_names: tuple[str, ...], folder: Path, title: str = "") -> None:
    """FOLDER/confusion.csv (pixel counts, rows: truth) and FOLDER/figures/confusion.png (row shares)."""
    cm.to_csv(folder / "confusion.csv", class_names)
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    save_confusion(cm.matrix, class_names, folder / "figures" / "confusion.png",
                   title=f"confusion matrix ({title}; rows: truth)" if title else "")


def load_split(cfg: TrainConfig, split: str, samples: int | None = None, image_size: int | None = None,
               original: bool = False, max_side: int | None = None) -> SegmentationDataset | ImageStore:
    """One split of cfg.dataset as a run with `cfg` sees it (the first `samples`): resized to image_size (default
    cfg's) squares, or with original=True at its own size (long side capped at max_side) as an ImageStore."""
    options: dict[str, Any] = {}
    if cfg.dataset == "synthetic":
        options = {"seed": cfg.seed} if samples is None else {"count": samples, "seed": cfg.seed}
        if original:
            options["size"] = image_size or cfg.image_size
    if cfg.dataset == "folder":
        options = {"ignore_index": cfg.ignore_index, "mask_format": cfg.masks or None}
    ds = build_dataset(cfg.dataset, split, root=cfg.data_root, download=cfg.download,
                       image_size=None if original else image_size or cfg.image_size,
                       interpolation="bilinear" if original else cfg.interpolation, max_side=max_side,
                       skip_bad=cfg.skip_bad, quiet=cfg.quiet, **options)
    if samples is not None and cfg.dataset != "synthetic" and samples < len(ds):
        if isinstance(ds, ImageStore):
            return ds.subset(samples)
        ds = dataclasses.replace(ds, images=ds.images[:samples], masks=ds.masks[:samples], ids=ds.ids[:samples])
    return ds


__all__ = ["EvalResult", "evaluate", "load_split", "torch_forward", "write_confusion"]
