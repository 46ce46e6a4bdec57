"""The contract every registered model keeps (like smp's base model tester): a model gets these tests by being
registered in seglab.models. Each runs on the model's tiny overrides (ModelEntry.tiny), so the file stays fast.

builds on the meta device at its defaults; forward and backward at the default size and at odd sizes (96x160,
100x75) with logits at the input's resolution; identical logits after a checkpoint round trip; listed by
`seglab models`; traced by `seglab trace`; and a torch.jit trace made at one size gives the eager model's logits
at another (no Python branch on the input's shape: what an exported ONNX graph needs).
"""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from seglab.checkpoint import load_model, save_checkpoint
from seglab.errors import SeglabError
from seglab.models import build_model, list_models, model_entry
from seglab.trace import trace_model

NAMES = list_models()
SIZES = [(128, 128), (96, 160), (100, 75)]
CLASSES = 4


def tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_classes=CLASSES, **model_entry(name).tiny)


@pytest.mark.parametrize("name", NAMES)
def test_builds_on_the_meta_device_at_its_defaults(name):
    with torch.device("meta"):
        model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert all(p.is_meta for p in model.parameters())
    assert model.seglab_spec["name"] == name


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_backward_at_the_default_and_odd_sizes(name):
    model = tiny(name).train()
    for hw in SIZES:
        x = torch.rand(1, 3, *hw)
        y = torch.randint(0, CLASSES, (1, *hw))
        logits = model(x)
        assert logits.shape == (1, CLASSES, *hw), (name, hw)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(logits, y).backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), (name, hw)


def test_the_full_size_vit_at_an_odd_size():
    """Once, the article's 86M-parameter ViT itself (not a tiny one): 100x75 pads to 112x80, a 7x5 patch grid."""
    torch.manual_seed(0)
    model = build_model("vit").train()
    assert sum(p.numel() for p in model.parameters()) == 86_284_806
    logits = model(torch.rand(1, 3, 100, 75))
    assert logits.shape == (1, 3, 100, 75)
    logits.mean().backward()
    assert torch.isfinite(model.patch_embed.weight.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_gives_identical_logits(name, tmp_path):
    model = tiny(name).eval()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, {"model": model.seglab_spec})
    loaded, _ = load_model(path)
    x = torch.rand(1, 3, 100, 75)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("name", NAMES)
def test_listed_by_seglab_models(name, models_listing):  # models_listing: `seglab models`, from conftest.py
    assert any(line.split()[0] == name for line in models_listing.splitlines() if line.strip())


@pytest.mark.parametrize("name", NAMES)
def test_traced_at_one_size_runs_at_another(name):
    model = tiny(name).eval()
    rows = trace_model(model, 64)  # `seglab trace`: the shape after every step
    assert rows
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about Python values: the check below is what counts
        traced = torch.jit.trace(model, torch.rand(1, 3, 128, 128), check_trace=False)
        x = torch.rand(1, 3, 100, 75)
        assert torch.allclose(traced(x), model(x), atol=1e-5), name


def test_importing_the_cli_imports_no_torch():
    """`seglab predict model.onnx` and `seglab serve` must run where torch is not installed."""
    import subprocess

    code = ("import sys, seglab, seglab.cli; seglab.cli.build_parser().parse_args(['predict', 'm.onnx', 'x.png', "
            "'--out', 'o']); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name", NAMES)
def test_a_misspelt_option_is_named_with_the_valid_ones(name):
    """Every family checks its options alike: the unknown name, then the valid ones (vit-b16 once raised Python's
    "unexpected keyword argument 'embed_sise'")."""
    with pytest.raises(SeglabError, match=r"unknown option\(s\) embed_sise .*; valid: .*\w") as info:
        build_model(name, num_classes=CLASSES, image_size=32, embed_sise=32)
    assert "unexpected keyword" not in str(info.value)
