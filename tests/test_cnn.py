"""The series' SegNet-style CNN: published parameter counts, shapes at any size, the faithful ReLU, the head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seglab.errors import SeglabError
from seglab.models import build_model
from seglab.config import RECIPES
from seglab.models.cnn import SegNet, SegNetConfig, build_segnet


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def small(**kw) -> SegNet:
    """A narrow SegNet with the same block plan, for fast forward/backward checks."""
    return SegNet(SegNetConfig(widths=(8, 16, 16, 32), **kw))


# The published counts (Parts 2 and 3) and seglab's head variants (num_classes=3).
@pytest.mark.parametrize(
    "name, expected",
    [("segnet", 15_274_892), ("segnet-dsc", 1_749_671), ("segnet-head", 15_310_345), ("segnet-dsc-head", 1_753_892)],
)
def test_parameter_counts_through_registry(name: str, expected: int) -> None:
    model = build_model(name, num_classes=3)
    assert isinstance(model, SegNet)
    assert n_params(model) == expected
    assert model.seglab_spec["name"] == name


def test_registry_flags() -> None:
    cfgs = {name: build_model(name).config for name in ("segnet", "segnet-head", "segnet-dsc", "segnet-dsc-head")}
    assert [(c.separable, c.faithful) for c in cfgs.values()] == [
        (False, True), (False, False), (True, True), (True, False)]


@pytest.mark.parametrize("separable", [False, True])
def test_full_size_forward_shape(separable: bool) -> None:
    model = build_segnet(num_classes=3, separable=separable).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 128, 128))
    assert out.shape == (1, 3, 128, 128)
    assert (out >= 0).all()  # faithful: the last layer is a ReLU


@pytest.mark.parametrize("size", [(128, 128), (100, 75), (33, 47), (16, 16), (5, 3)])
@pytest.mark.parametrize("faithful", [True, False])
def test_any_input_size(size: tuple[int, int], faithful: bool) -> None:
    model = small(num_classes=5, faithful=faithful).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 5, *size)
    assert torch.isfinite(out).all()


def test_faithful_outputs_non_negative_head_can_be_negative() -> None:
    x = torch.rand(2, 3, 32, 32)
    faithful, head = build_model("segnet-dsc"), build_model("segnet-dsc-head")
    for mode in ("train", "eval"):
        getattr(faithful, mode)()
        getattr(head, mode)()
        with torch.no_grad():
            assert (faithful(x) >= 0).all()
            assert (head(x) < 0).any()


def test_backward_pass() -> None:
    model = small(separable=True, faithful=False)
    x = torch.rand(2, 3, 40, 24)
    target = torch.randint(0, 3, (2, 40, 24))
    loss = torch.nn.functional.cross_entropy(model(x), target)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_channels_last_matches() -> None:
    model = small(faithful=False).eval()
    x = torch.rand(2, 3, 48, 32)
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_unknown_and_invalid_overrides() -> None:
    with pytest.raises(SeglabError, match="unknown option"):
        build_model("segnet", embed_size=512)
    with pytest.raises(SeglabError, match="invalid SegNet"):
        build_model("segnet-dsc", widths=(8, 16), depths=(2, 2, 3))
    model = build_model("segnet", widths=[4, 8], depths=[1, 1])  # lists, as a YAML config gives them
    assert model.config.widths == (4, 8) and model.config.multiple == 4


def test_recipes() -> None:
    # The one recipes table (config.py) holds the series' values.
    assert RECIPES["segnet-part2"].items() >= {"optimizer": "adam", "lr": 1e-3, "scheduler": "step", "step_size": 7,
                                               "gamma": 0.7, "epochs": 20}.items()
    assert RECIPES["segnet-part3"]["scheduler"] == "none"


def test_max_unpool_as_a_scatter_equals_max_unpool2d() -> None:
    """SegNet's unpooling is written as a scatter (it traces and exports at any size); the same values and
    gradients as F.max_unpool2d."""
    from seglab.models.cnn import MaxUnpool2x

    x = torch.randn(2, 5, 16, 12, requires_grad=True)
    pooled, indices = F.max_pool2d(x, 2, return_indices=True)
    ours, theirs = MaxUnpool2x()(pooled, indices), F.max_unpool2d(pooled, indices, 2)
    assert torch.equal(ours, theirs)
    g = torch.randn_like(ours)
    assert torch.equal(torch.autograd.grad(ours, pooled, g)[0], torch.autograd.grad(theirs, pooled, g)[0])
