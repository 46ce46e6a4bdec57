"""ConfusionMatrix: pixel accuracy, per-class IoU, mIoU, Dice and the article's IoU, checked against
torchmetrics and against plain counting; exact over batches; 255 pixels ignored; logits accepted."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex

from seglab.metrics import IGNORE_INDEX, ConfusionMatrix


def random_pair(
    seed: int, shape: tuple[int, ...], num_classes: int, agree: float = 0.6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and predictions that agree on about `agree` of the pixels (so metrics are far from 0 and 1)."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, shape, generator=g)
    noise = torch.randint(0, num_classes, shape, generator=g)
    keep = torch.rand(shape, generator=g) < agree
    return torch.where(keep, target, noise), target


def cm_of(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> ConfusionMatrix:
    cm = ConfusionMatrix(num_classes)
    cm.update(pred, target)
    return cm


# ---------------------------------------------------------------------------------------------------------------
# The matrix itself


def test_matrix_counts_truth_rows_prediction_columns() -> None:
    target = torch.tensor([[[0, 0, 1, 2]]])
    pred = torch.tensor([[[0, 1, 1, 0]]])
    cm = cm_of(pred, target, 3)
    expected = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 0, 0]])
    assert cm.matrix.dtype == torch.int64
    assert torch.equal(cm.matrix, expected)
    assert cm.pixel_accuracy() == 0.5
    # IoU by hand: class 0: 1 / (2 + 2 - 1), class 1: 1 / (1 + 2 - 1), class 2: 0 / 1.
    assert cm.iou_per_class() == pytest.approx([1 / 3, 1 / 2, 0.0])
    assert cm.mean_iou() == pytest.approx((1 / 3 + 1 / 2 + 0) / 3)
    assert cm.dice_per_class() == pytest.approx([2 * 1 / 4, 2 * 1 / 3, 0.0])


@pytest.mark.parametrize("seed, C", [(0, 3), (1, 2), (2, 5), (3, 21)])
def test_pixel_accuracy_is_fraction_correct(seed: int, C: int) -> None:
    pred, target = random_pair(seed, (4, 16, 24), C)
    cm = cm_of(pred, target, C)
    assert cm.matrix.sum().item() == target.numel()
    assert cm.pixel_accuracy() == pytest.approx((pred == target).double().mean().item(), abs=1e-12)


@pytest.mark.parametrize("seed, C", [(0, 3), (1, 2), (2, 5), (3, 8)])
def test_iou_per_class_and_miou_match_torchmetrics(seed: int, C: int) -> None:
    pred, target = random_pair(seed, (3, 20, 20), C)
    cm = cm_of(pred, target, C)
    ref = MulticlassJaccardIndex(C, average=None)(pred, target)
    assert cm.iou_per_class() == pytest.approx(ref.tolist(), abs=1e-6)
    ref_macro = MulticlassJaccardIndex(C, average="macro")(pred, target).item()
    assert cm.mean_iou() == pytest.approx(ref_macro, abs=1e-6)
    assert cm.mean_iou() == pytest.approx(sum(cm.iou_per_class()) / C, abs=1e-12)


@pytest.mark.parametrize("seed, C", [(0, 3), (1, 4)])
def test_dice_matches_f1_and_iou_relation(seed: int, C: int) -> None:
    pred, target = random_pair(seed, (2, 16, 16), C)
    cm = cm_of(pred, target, C)
    dice = cm.dice_per_class()
    ref = MulticlassF1Score(C, average=None)(pred, target)  # per-class F1 == Dice
    assert dice == pytest.approx(ref.tolist(), abs=1e-6)
    for d, j in zip(dice, cm.iou_per_class()):
        assert d == pytest.approx(2 * j / (1 + j), abs=1e-12)


def test_absent_class_is_nan_and_left_out_of_miou() -> None:
    target = torch.tensor([[[0, 0, 1, 1]]])
    pred = torch.tensor([[[0, 1, 1, 1]]])
    cm = cm_of(pred, target, 4)  # classes 2 and 3 appear nowhere
    iou = cm.iou_per_class()
    assert iou[:2] == pytest.approx([1 / 2, 2 / 3])
    assert math.isnan(iou[2]) and math.isnan(iou[3])
    assert cm.mean_iou() == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert math.isnan(cm.dice_per_class()[3])


def test_empty_matrix_and_reset() -> None:
    cm = ConfusionMatrix(3)
    assert math.isnan(cm.pixel_accuracy())
    assert math.isnan(cm.mean_iou())
    pred, target = random_pair(0, (1, 8, 8), 3)
    cm.update(pred, target)
    assert cm.matrix.sum() == 64
    cm.reset()
    assert cm.matrix.sum() == 0
    assert math.isnan(cm.pixel_accuracy())


# ---------------------------------------------------------------------------------------------------------------
# The article's IoU


@pytest.mark.parametrize("seed", range(5))
def test_article_iou_matches_torchmetrics_micro_ignore_background(seed: int) -> None:
    pred, target = random_pair(seed, (4, 32, 32), 3, agree=0.3 + 0.1 * seed)
    cm = cm_of(pred, target, 3)
    ref = MulticlassJaccardIndex(3, average="micro", ignore_index=1)(pred, target).item()
    assert cm.article_iou() == pytest.approx(ref, abs=1e-6)
    assert cm.summary()["article_iou"] == cm.article_iou()


@pytest.mark.parametrize("seed, sizes", [(0, [21, 21, 21, 7]), (1, [1, 5, 64]), (2, [10])])
def test_batches_accumulate_exactly(seed: int, sizes: list[int]) -> None:
    """Updating batch by batch gives the same matrix (and metrics) as one update on the whole split."""
    n = sum(sizes)
    pred, target = random_pair(seed, (n, 12, 12), 3)
    whole = cm_of(pred, target, 3)
    split = ConfusionMatrix(3)
    tm = MulticlassJaccardIndex(3, average="micro", ignore_index=1)
    start = 0
    for b in sizes:
        split.update(pred[start:start + b], target[start:start + b])
        tm.update(pred[start:start + b], target[start:start + b])
        start += b
    assert torch.equal(split.matrix, whole.matrix)
    assert split.article_iou() == whole.article_iou()
    assert split.pixel_accuracy() == whole.pixel_accuracy()
    assert split.iou_per_class() == whole.iou_per_class()
    assert split.article_iou() == pytest.approx(tm.compute().item(), abs=1e-6)


def test_exact_differs_from_mean_of_batch_figures() -> None:
    # Batches of very different difficulty: the mean of per-batch IoUs is not the split's IoU.
    t = torch.zeros(2, 4, 4, dtype=torch.long)
    p = t.clone()
    p[1, :, :3] = 2  # the second batch is mostly wrong
    whole = cm_of(p, t, 3).article_iou()
    per_batch = [cm_of(p[i:i + 1], t[i:i + 1], 3).article_iou() for i in range(2)]
    # Whole: TP0 = 20, union0 = 32, union2 = 12. Batches: 16 / 16 and 4 / (16 + 12).
    assert whole == pytest.approx(20 / 44, abs=1e-12)
    assert per_batch == pytest.approx([1.0, 4 / 28], abs=1e-12)
    assert whole != pytest.approx(sum(per_batch) / 2)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 3),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    agree=st.floats(0.0, 1.0),
)
def test_article_iou_property(seed: int, b: int, h: int, w: int, agree: float) -> None:
    pred, target = random_pair(seed, (b, h, w), 3, agree=agree)
    cm = cm_of(pred, target, 3)
    ref = MulticlassJaccardIndex(3, average="micro", ignore_index=1, zero_division=0.0)(pred, target).item()
    assert cm.article_iou() == pytest.approx(ref, abs=1e-6)
    assert 0.0 <= cm.article_iou() <= 1.0


# ---------------------------------------------------------------------------------------------------------------
# Ignore pixels and logits


def test_ignore_pixels_are_excluded() -> None:
    pred, target = random_pair(7, (3, 16, 16), 3)
    g = torch.Generator().manual_seed(8)
    ignored = torch.rand(target.shape, generator=g) < 0.3
    target_ig = target.masked_fill(ignored, IGNORE_INDEX)
    cm = cm_of(pred, target_ig, 3)
    assert cm.matrix.sum().item() == (~ignored).sum().item()
    # The same as counting the valid pixels only.
    ref = cm_of(pred[~ignored].view(1, 1, -1), target[~ignored].view(1, 1, -1), 3)
    assert torch.equal(cm.matrix, ref.matrix)
    # Predictions at ignored pixels change nothing.
    pred2 = torch.where(ignored, (pred + 1) % 3, pred)
    assert torch.equal(cm_of(pred2, target_ig, 3).matrix, cm.matrix)
    # And torchmetrics with ignore_index=255 agrees.
    ref_iou = MulticlassJaccardIndex(3, average=None, ignore_index=IGNORE_INDEX)(pred, target_ig)
    assert cm.iou_per_class() == pytest.approx(ref_iou.tolist(), abs=1e-6)
    assert cm.pixel_accuracy() == pytest.approx((pred == target)[~ignored].double().mean().item())


def test_logits_are_accepted() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 10, 12, generator=g)
    target = torch.randint(0, 4, (2, 10, 12), generator=g)
    target[0, 0, :5] = IGNORE_INDEX
    a = cm_of(logits, target, 4)
    b = cm_of(logits.argmax(1), target, 4)
    assert torch.equal(a.matrix, b.matrix)
    assert a.matrix.sum().item() == target.numel() - 5


def test_summary_keys() -> None:
    pred, target = random_pair(0, (1, 8, 8), 3)
    s = cm_of(pred, target, 3).summary(("pet", "background", "border"))
    assert set(s) == {"pixel_accuracy", "miou", "article_iou", "iou_pet", "iou_background", "iou_border",
                      "dice_pet", "dice_background", "dice_border"}
    assert s["iou_background"] == cm_of(pred, target, 3).iou_per_class()[1]
