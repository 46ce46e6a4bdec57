"""Segmentation losses: build_loss(name, class_weights, ignore_index) -> ce, dice, focal, jaccard or ce+dice.

Every loss takes logits (B, C, H, W) and targets (B, H, W) of class ids with ignore_index for pixels that
count for nothing, and honours per-class weights:

  ce       cross-entropy, mean over the pixels (weighted: sum(w[y] * nll) / sum(w[y]), torch's definition).
  focal    softmax focal loss (Lin et al. 2017), gamma 2: w[y] * (1 - p_y)^gamma * -log p_y, averaged like ce
           (gamma 0 is ce exactly).
  dice     1 - soft Dice over the batch, per class: 2 sum(p y) / (sum p + sum y), averaged over the classes
           present in the batch's targets (weighted by w), as segmentation_models_pytorch's DiceLoss does.
  jaccard  the article notebook's IoU loss: -log of a soft IoU, sum(p y) / sum(p + y - p y) over every class and
           pixel of an image (+0.001 on both sides), averaged over the batch; class weights weight each class's
           terms.
  ce+dice  ce + dice.

class_weights: None (all 1), a list of C floats, or "auto": median frequency balancing from the training pixel
histogram (Eigen & Fergus 2015): w_c = median(f) / f_c with f_c = class c's share of the labelled pixels; a class
with no pixels gets weight 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import SeglabError

LOSSES = ("ce", "dice", "focal", "jaccard", "ce+dice")
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits (B, C, H, W) float, masks (B, H, W)) -> loss
_EPS = 1e-6  # keeps dice's ratio finite when a class has no pixels and no probability mass


def auto_class_weights(pixel_counts: Sequence[int]) -> list[float]:
    """Median frequency balancing: w_c = median(f) / f_c over the classes that occur (others get 1)."""
    total = float(sum(pixel_counts))
    if total <= 0:
        raise SeglabError("class_weights auto: the training masks have no labelled pixels")
    freqs = [c / total for c in pixel_counts]
    present = sorted(f for f in freqs if f > 0)
    n = len(present)
    median = present[n // 2] if n % 2 else (present[n // 2 - 1] + present[n // 2]) / 2
    return [median / f if f > 0 else 1.0 for f in freqs]


def parse_class_weights(value: str | Sequence[float] | None) -> str | list[float] | None:
    """'none' | 'auto' | 'w0,w1,...' (or a list) -> None | 'auto' | list of floats; a SeglabError otherwise."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        weights = [float(v) for v in (value.split(",") if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        raise SeglabError(
            f"class_weights must be none, auto or comma-separated numbers (w0,w1,...), not {value!r}"
        ) from None
    if not weights or any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) == 0:
        raise SeglabError(f"class_weights must be finite, non-negative and not all zero, not {value!r}")
    return weights


class SegmentationLoss(nn.Module):
    """One of LOSSES over logits (B, C, H, W) and targets (B, H, W); see the module docstring."""

    def __init__(self, name: str = "ce", weight: torch.Tensor | None = None, ignore_index: int = 255,
                 gamma: float = 2.0, label_smoothing: float = 0.0):
        super().__init__()
        if name not in LOSSES:
            raise SeglabError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
        self.name = name
        self.ignore_index = ignore_index
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()  # losses in float32 at least (float64 stays float64)
        if self.weight is not None and self.weight.numel() != logits.shape[1]:
            raise SeglabError(f"class_weights has {self.weight.numel()} values but the model predicts "
                              f"{logits.shape[1]} classes; give one weight per class")
        if self.weight is not None and self.weight.dtype != logits.dtype:
            self.weight = self.weight.to(logits.dtype)
        if self.name == "ce":
            return self._ce(logits, target)
        if self.name == "focal":
            return self._focal(logits, target)
        if self.name == "dice":
            return self._dice(logits, target)
        if self.name == "jaccard":
            return self._jaccard(logits, target)
        return self._ce(logits, target) + self._dice(logits, target)

    def _ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, weight=self.weight, ignore_index=self.ignore_index,
                               label_smoothing=self.label_smoothing)

    def _valid(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(probabilities (B, C, H, W), one-hot targets (B, C, H, W), valid pixels (B, 1, H, W)), ignore zeroed."""
        valid = (target != self.ignore_index).unsqueeze(1)  # (B, 1, H, W)
        probs = logits.softmax(dim=1) * valid
        safe = torch.where(valid.squeeze(1), target, torch.zeros_like(target))
        onehot = F.one_hot(safe.long(), logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype) * valid
        return probs, onehot, valid

    def _focal(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.ignore_index  # (B, H, W)
        safe = torch.where(valid, target, torch.zeros_like(target)).long()
        logp = logits.log_softmax(dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)  # (B, H, W): log p_y
        w = self.weight[safe] if self.weight is not None else torch.ones_like(logp)
        w = w * valid
        loss = -w * (1 - logp.exp()).pow(self.gamma) * logp
        return loss.sum() / w.sum().clamp_min(_EPS)

    def _dice(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs, onehot, _ = self._valid(logits, target)
        dims = (0, 2, 3)
        inter = (probs * onehot).sum(dims)  # (C,)
        denom = probs.sum(dims) + onehot.sum(dims)
        dice = (2 * inter + _EPS) / (denom + _EPS)
        present = (onehot.sum(dims) > 0).to(dice.dtype)
        w = present * (self.weight if self.weight is not None else 1.0)
        return ((1 - dice) * w).sum() / w.sum().clamp_min(_EPS)

    def _jaccard(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs, onehot, _ = self._valid(logits, target)
        inter = probs * onehot
        union = probs + onehot - inter
        if self.weight is not None:
            w = self.weight.view(1, -1, 1, 1)
            inter, union = inter * w, union * w
        iou = (inter.sum(dim=(1, 2, 3)) + 0.001) / (union.sum(dim=(1, 2, 3)) + 0.001)  # (B,)
        return -iou.log().mean()


def build_loss(
    name: str = "ce",
    class_weights: str | Sequence[float] | None = None,
    ignore_index: int = 255,
    pixel_counts: Sequence[int] | None = None,
    label_smoothing: float = 0.0,
) -> SegmentationLoss:
    """A loss module for logits (B, C, H, W) and targets (B, H, W); see the module docstring.

    class_weights: None/'none', 'auto' (needs pixel_counts, the training split's pixels per class), or C floats
    (a list or 'w0,w1,...').
    """
    if name not in LOSSES:
        raise SeglabError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
    weights = parse_class_weights(class_weights)
    if weights == "auto":
        if pixel_counts is None:
            raise SeglabError("class_weights auto needs the training pixel counts of every class")
        weights = auto_class_weights(pixel_counts)
    if weights is not None and pixel_counts is not None and len(weights) != len(pixel_counts):
        raise SeglabError(f"class_weights has {len(weights)} values but the dataset has {len(pixel_counts)} classes; "
                          "give one weight per class")
    tensor = torch.tensor(weights, dtype=torch.float32) if weights is not None else None
    return SegmentationLoss(name, tensor, ignore_index=ignore_index, label_smoothing=label_smoothing)


__all__ = ["LOSSES", "SegmentationLoss", "auto_class_weights", "build_loss", "parse_class_weights"]
