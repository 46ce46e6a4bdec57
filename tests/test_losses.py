"""Losses: each against a direct formula on small tensors, torch / torchmetrics where they have the same thing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_f1_score, multiclass_jaccard_index

from seglab.errors import SeglabError
from seglab.losses import LOSSES, auto_class_weights, build_loss, parse_class_weights

C = 3


def data(seed: int = 0, ignore: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, C, 5, 6, generator=g)
    target = torch.randint(0, C, (2, 5, 6), generator=g)
    if ignore:
        target[0, 0, :4] = 255
        target[1, 2:, 5] = 255
    return logits, target


def pixels(logits, target):
    """(N, C) logits and (N,) targets of the non-ignored pixels."""
    flat = logits.permute(0, 2, 3, 1).reshape(-1, C)
    t = target.reshape(-1)
    keep = t != 255
    return flat[keep], t[keep]


def test_ce_is_torch_cross_entropy_with_weights_and_ignore() -> None:
    logits, target = data()
    w = [0.5, 2.0, 1.0]
    got = build_loss("ce", w)(logits, target)
    x, t = pixels(logits, target)
    nll = -x.log_softmax(1)[torch.arange(len(t)), t]
    wt = torch.tensor(w)[t]
    assert torch.allclose(got, (wt * nll).sum() / wt.sum(), atol=1e-6)


def test_focal_formula_and_gamma_zero_is_ce() -> None:
    logits, target = data(1)
    w = [1.0, 3.0, 0.5]
    x, t = pixels(logits, target)
    p = x.softmax(1)[torch.arange(len(t)), t]
    wt = torch.tensor(w)[t]
    direct = (wt * (1 - p) ** 2 * -p.log()).sum() / wt.sum()
    assert torch.allclose(build_loss("focal", w)(logits, target), direct, atol=1e-6)
    zero = build_loss("focal", w)
    zero.gamma = 0.0
    assert torch.allclose(zero(logits, target), build_loss("ce", w)(logits, target), atol=1e-6)


def test_dice_formula_and_torchmetrics_on_hard_predictions() -> None:
    logits, target = data(2)
    x, t = pixels(logits, target)
    p = x.softmax(1)
    y = F.one_hot(t, C).float()
    per = [1 - (2 * (p[:, c] * y[:, c]).sum() + 1e-6) / (p[:, c].sum() + y[:, c].sum() + 1e-6) for c in range(C)]
    assert torch.allclose(build_loss("dice")(logits, target), torch.stack(per).mean(), atol=1e-6)
    w = [1.0, 2.0, 3.0]
    assert torch.allclose(build_loss("dice", w)(logits, target), (torch.stack(per) * torch.tensor(w)).sum() / 6,
                          atol=1e-6)
    # With (nearly) one-hot probabilities, 1 - dice is torchmetrics' macro F1 (= Dice) of the argmax.
    hard = logits * 1e4
    f1 = multiclass_f1_score(hard.argmax(1), target, num_classes=C, average="macro", ignore_index=255)
    assert math.isclose(1 - build_loss("dice")(hard, target).item(), f1.item(), abs_tol=1e-4)


def test_jaccard_is_the_notebooks_iou_loss_and_torchmetrics_micro_jaccard() -> None:
    logits, target = data(3, ignore=False)

    def notebook_iou_loss(pred, gt):  # the article notebook's IoULoss(softmax=True), verbatim in substance
        pred = torch.nn.Softmax(dim=1)(pred)
        gt = torch.cat([(gt.unsqueeze(1) == i) for i in range(3)], dim=1)
        intersection = gt * pred
        union = gt + pred - intersection
        iou = (intersection.sum(dim=(1, 2, 3)) + 0.001) / (union.sum(dim=(1, 2, 3)) + 0.001)
        return -(iou.mean().log())

    ours = build_loss("jaccard")(logits, target)
    # The notebook takes the log of the batch mean; we average per-image -log (the same for one image).
    for b in range(2):
        assert torch.allclose(build_loss("jaccard")(logits[b:b + 1], target[b:b + 1]),
                              notebook_iou_loss(logits[b:b + 1], target[b:b + 1]), atol=1e-6)
    assert ours > 0
    hard = logits[:1] * 1e4
    micro = multiclass_jaccard_index(hard.argmax(1), target[:1], num_classes=C, average="micro")
    assert math.isclose(math.exp(-build_loss("jaccard")(hard, target[:1]).item()), micro.item(), abs_tol=1e-3)


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_ignores_ignored_pixels_and_has_gradients(name: str) -> None:
    logits, target = data(4)
    a = build_loss(name, "1,2,1")(logits, target)
    # Changing the logits of ignored pixels changes nothing.
    other = logits.clone()
    other.permute(0, 2, 3, 1)[target == 255] = 50.0
    assert torch.allclose(a, build_loss(name, "1,2,1")(other, target), atol=1e-6)
    x = logits.clone().requires_grad_(True)
    build_loss(name)(x, target).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert (x.grad.permute(0, 2, 3, 1)[target == 255] == 0).all()
    perfect = F.one_hot(torch.where(target == 255, 0, target), C).permute(0, 3, 1, 2).float() * 30
    assert build_loss(name)(perfect, target) < 0.01  # a perfect prediction costs (almost) nothing


def test_ce_plus_dice_is_the_sum() -> None:
    logits, target = data(5)
    total = build_loss("ce+dice")(logits, target)
    assert torch.allclose(total, build_loss("ce")(logits, target) + build_loss("dice")(logits, target))


def test_auto_weights_median_frequency_and_parsing() -> None:
    assert auto_class_weights([70, 20, 10, 0]) == pytest.approx([20 / 70, 1.0, 2.0, 1.0])
    assert auto_class_weights([50, 50]) == [1.0, 1.0]
    loss = build_loss("ce", "auto", pixel_counts=[90, 10])
    assert loss.weight.tolist() == pytest.approx([(0.5) / 0.9, 0.5 / 0.1])
    assert parse_class_weights("none") is None and parse_class_weights("auto") == "auto"
    assert parse_class_weights("1, 2.5") == [1.0, 2.5]
    for bad in ("a,b", "-1,2", "0,0", "nan,1"):
        with pytest.raises(SeglabError, match="class_weights"):
            parse_class_weights(bad)
    with pytest.raises(SeglabError, match="pixel counts"):
        build_loss("ce", "auto")
    with pytest.raises(SeglabError, match="one weight per class"):
        build_loss("ce", [1, 2], pixel_counts=[1, 2, 3])
    with pytest.raises(SeglabError, match="one weight per class"):
        build_loss("dice", [1, 2])(*data())
    with pytest.raises(SeglabError, match="unknown loss"):
        build_loss("hinge")
