"""An exact confusion matrix over a whole split, and the metrics derived from it.

pixel_accuracy, per-class IoU, mIoU and Dice come from one matrix, so they are exact over the split rather
than means of per-batch figures. article_iou is the article's "IoU": torchmetrics'
MulticlassJaccardIndex(C, average="micro", ignore_index=1), i.e. micro-averaged Jaccard with the
background class's pixels left out.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch

from .data.io import IGNORE_INDEX  # the one ignore value; also read from here by metrics' users
from .errors import SeglabError


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

    def present(self) -> list[bool]:
        """Whether each class occurs in the truth (has labelled pixels) over what was accumulated."""
        rows = self._m().sum(1)
        return [bool(rows[c] > 0) for c in range(self.num_classes)]

    def summary(self, class_names: tuple[str, ...] | list[str] | None = None) -> dict[str, float]:
        """A flat dict: pixel_accuracy, article_iou, miou, iou_<class> and dice_<class> for every class.

        A class absent from the truth has NaN IoU and Dice here (undefined for this split; format_metric shows
        n/a). article_iou (the article's IoU, which leaves out the background class 1) is given when class 1 is
        "background" (Oxford-IIIT Pet, synthetic) or the classes are unnamed.
        """
        names = list(class_names) if class_names else [str(c) for c in range(self.num_classes)]
        out = {"pixel_accuracy": self.pixel_accuracy(), "miou": self.mean_iou()}
        if self.num_classes > 1 and (not class_names or names[1] == "background"):
            out["article_iou"] = self.article_iou(ignore_index=1)
        present = self.present()
        for n, v, ok in zip(names, self.iou_per_class(), present):
            out[f"iou_{n}"] = v if ok else math.nan
        for n, v, ok in zip(names, self.dice_per_class(), present):
            out[f"dice_{n}"] = v if ok else math.nan
        return out

    def to_csv(self, path: str | Path, class_names: tuple[str, ...] | list[str] | None = None) -> None:
        """Write the matrix as CSV: one row per true class, one column per predicted class, pixel counts."""
        names = list(class_names) if class_names else [str(c) for c in range(self.num_classes)]
        m = self.matrix.cpu().tolist()
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["truth \\ predicted", *names])
            for n, row in zip(names, m):
                w.writerow([n, *row])


def format_metric(value: float) -> str:
    """A metric for a summary line: 4 decimals, or n/a when it is undefined (NaN: a class absent from the split)."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def per_class_line(metrics: dict[str, float], class_names: tuple[str, ...] | list[str]) -> str:
    """'IoU / Dice: pet 0.8012 / 0.8897, border n/a (absent)' for every class."""
    parts = []
    for n in class_names:
        iou, dice = metrics.get(f"iou_{n}", math.nan), metrics.get(f"dice_{n}", math.nan)
        if math.isnan(iou) and math.isnan(dice):
            parts.append(f"{n} n/a (absent)")
        else:
            parts.append(f"{n} {format_metric(iou)} / {format_metric(dice)}")
    return "IoU / Dice: " + ", ".join(parts)
