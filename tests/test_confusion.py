"""Per-class Dice beside IoU, n/a for classes absent from a split, the confusion matrix as CSV and PNG."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
from PIL import Image
from torchmetrics.functional.classification import multiclass_f1_score

from seglab.metrics import ConfusionMatrix, format_metric, per_class_line
from seglab.viz import legend, save_confusion


def test_dice_matches_torchmetrics_and_absent_class_is_na(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 2, (2, 6, 7), generator=g)  # class 2 never occurs in the truth
    pred = torch.randint(0, 3, (2, 6, 7), generator=g)
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    names = ("background", "cat", "dog")
    s = cm.summary(names)
    ref = multiclass_f1_score(pred, target, num_classes=3, average="none")
    assert abs(s["dice_background"] - ref[0].item()) < 1e-6 and abs(s["dice_cat"] - ref[1].item()) < 1e-6
    assert math.isnan(s["iou_dog"]) and math.isnan(s["dice_dog"])  # absent: undefined, not 0, 1 or a guess
    assert cm.present() == [True, True, False]
    line = per_class_line(s, names)
    assert line.endswith("dog n/a (absent)") and f"cat {s['iou_cat']:.4f} / {s['dice_cat']:.4f}" in line
    assert format_metric(float("nan")) == "n/a" and format_metric(0.5) == "0.5000"
    # Binary classes: no article IoU (it leaves out class 1, here the foreground).
    assert "article_iou" not in cm.summary(("background", "foreground", "x"))

    cm.to_csv(tmp_path / "cm.csv", names)
    rows = list(csv.reader(open(tmp_path / "cm.csv")))
    assert rows[0] == ["truth \\ predicted", *names]
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == cm.matrix.tolist()
    assert sum(int(v) for r in rows[1:] for v in r[1:]) == target.numel()
    save_confusion(cm.matrix, names, tmp_path / "cm.png")
    assert Image.open(tmp_path / "cm.png").size[0] > 100
    strip = legend(names, [(0, 0, 0), (255, 0, 0), (0, 0, 255)], width=300)
    assert strip.size[0] == 300
