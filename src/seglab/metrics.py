"""An exact confusion matrix over a whole split, and the metrics derived from it.

pixel_accuracy, per-class IoU, mIoU and Dice come from one matrix, so they are exact over the split rather
than means of per-batch figures. article_iou is the article's "IoU": torchmetrics'
MulticlassJaccardIndex(C, average="micro", ignore_index=1), i.e. micro-averaged Jaccard with the
background class's pixels left out.
"""

from __future__ import annotations

import math

import torch

from .errors import SeglabError

IGNORE_INDEX = 255


class ConfusionMatrix:
    """Accumulates a (C, C) matrix, rows = truth, columns = prediction, on the device of the first update."""

    def __init__(self, num_classes: int, device: torch.device | str | None = None):
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred: class ids (B, H, W) or logits (B, C, H, W); target: (B, H, W) with 255 = ignore."""
        if pred.ndim == target.ndim + 1:
            pred = pred.argmax(dim=1)
        if self.matrix.device != pred.device:
            self.matrix = self.matrix.to(pred.device)
        C = self.num_classes
        valid = target != IGNORE_INDEX
        idx = target[valid].long() * C + pred[valid].long()
        counts = torch.bincount(idx, minlength=C * C)
        if counts.numel() > C * C:  # bincount already synchronised to size its output; this check is free
            raise SeglabError(f"class ids outside 0..{C - 1} (255 = ignore) in a prediction or target")
        self.matrix += counts.view(C, C)

    def reset(self) -> None:
        self.matrix.zero_()

    def _m(self) -> torch.Tensor:
        return self.matrix.double().cpu()

    def pixel_accuracy(self) -> float:
        m = self._m()
        total = m.sum().item()
        return m.diag().sum().item() / total if total else math.nan

    def iou_per_class(self) -> list[float]:
        """IoU = TP / (TP + FP + FN) per class; NaN for a class absent from both truth and prediction."""
        m = self._m()
        tp = m.diag()
        union = m.sum(0) + m.sum(1) - tp
        return [tp[c].item() / union[c].item() if union[c] > 0 else math.nan for c in range(self.num_classes)]

    def mean_iou(self) -> float:
        vals = [v for v in self.iou_per_class() if not math.isnan(v)]
        return sum(vals) / len(vals) if vals else math.nan

    def dice_per_class(self) -> list[float]:
        m = self._m()
        tp = m.diag()
        denom = m.sum(0) + m.sum(1)
        return [2 * tp[c].item() / denom[c].item() if denom[c] > 0 else math.nan for c in range(self.num_classes)]

    def article_iou(self, ignore_index: int = 1) -> float:
        """The article's IoU: micro Jaccard over all classes, ignoring pixels whose truth is `ignore_index`."""
        m = self._m().clone()
        m[ignore_index, :] = 0  # torchmetrics drops pixels whose target is ignore_index
        tp = m.diag()
        denom = m.sum(0) + m.sum(1) - tp
        num = tp.sum() - tp[ignore_index]
        den = denom.sum() - denom[ignore_index]
        return (num / den).item() if den > 0 else 0.0

    def summary(self, class_names: tuple[str, ...] | list[str] | None = None) -> dict[str, float]:
        """A flat dict: pixel_accuracy, article_iou, miou, iou_<class> for every class."""
        names = list(class_names) if class_names else [str(c) for c in range(self.num_classes)]
        out = {"pixel_accuracy": self.pixel_accuracy(), "miou": self.mean_iou()}
        if self.num_classes > 1:
            out["article_iou"] = self.article_iou(ignore_index=1)
        for n, v in zip(names, self.iou_per_class()):
            out[f"iou_{n}"] = v
        return out
