"""SegFormer: presets, HF parameter counts and logits parity, HF weight import (4.x and 5.x names), any input size."""

from __future__ import annotations

import importlib.util
import json
import logging
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from seglab.errors import SeglabError
from seglab.models import build_model
from seglab.models.segformer import (
    VARIANTS,
    Segformer,
    SegformerConfig,
)
from seglab.models.segformer_hf import build_segformer, hf_state_dict_to_seglab, load_hf_weights

requires_hf = pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="needs transformers")
TOL = 1e-4

# transformers 4.x names (also what save_pretrained writes, in 5.x too) <-> the 5.x in-memory names, after
# transformers' own conversion_mapping.py ("SegformerModel", "SegformerForSemanticSegmentation").
V4_TO_V5 = [
    (r"encoder\.patch_embeddings\.(\d+)\.", r"stages.\1.patch_embeddings."),
    (r"encoder\.block\.(\d+)\.", r"stages.\1.blocks."),
    (r"encoder\.layer_norm\.(\d+)\.", r"stages.\1.layer_norm."),
    (r"attention\.self\.query\.", "attention.q_proj."),
    (r"attention\.self\.key\.", "attention.k_proj."),
    (r"attention\.self\.value\.", "attention.v_proj."),
    (r"attention\.self\.sr\.", "attention.sequence_reduction.sequence_reduction."),
    (r"attention\.self\.layer_norm\.", "attention.sequence_reduction.layer_norm."),
    (r"attention\.output\.dense\.", "attention.o_proj."),
    (r"mlp\.dense1\.", "mlp.fc1."),
    (r"mlp\.dense2\.", "mlp.fc2."),
    (r"layer_norm_1\.", "layernorm_before."),
    (r"layer_norm_2\.", "layernorm_after."),
    (r"decode_head\.linear_c\.", "decode_head.linear_projections."),
]
V5_TO_V4 = [
    (r"stages\.(\d+)\.patch_embeddings\.", r"encoder.patch_embeddings.\1."),
    (r"stages\.(\d+)\.blocks\.", r"encoder.block.\1."),
    (r"stages\.(\d+)\.layer_norm\.", r"encoder.layer_norm.\1."),
    (r"attention\.q_proj\.", "attention.self.query."),
    (r"attention\.k_proj\.", "attention.self.key."),
    (r"attention\.v_proj\.", "attention.self.value."),
    (r"attention\.sequence_reduction\.sequence_reduction\.", "attention.self.sr."),
    (r"attention\.sequence_reduction\.layer_norm\.", "attention.self.layer_norm."),
    (r"attention\.o_proj\.", "attention.output.dense."),
    (r"mlp\.fc1\.", "mlp.dense1."),
    (r"mlp\.fc2\.", "mlp.dense2."),
    (r"layernorm_before\.", "layer_norm_1."),
    (r"layernorm_after\.", "layer_norm_2."),
    (r"decode_head\.linear_projections\.", "decode_head.linear_c."),
]


def rename(sd: dict, rules: list) -> dict:
    out = {}
    for k, v in sd.items():
        for pattern, repl in rules:
            k = re.sub(pattern, repl, k)
        out[k] = v.contiguous()
    return out


def is_v4(sd: dict) -> bool:
    return any(".encoder.block." in k or k.startswith("encoder.block.") for k in sd)


def v4_and_v5(sd: dict) -> tuple[dict, dict]:
    """The same weights in transformers 4.x names and in 5.x names, whichever the input has."""
    if is_v4(sd):
        return {k: v.contiguous() for k, v in sd.items()}, rename(sd, V4_TO_V5)
    return rename(sd, V5_TO_V4), {k: v.contiguous() for k, v in sd.items()}


def hf_config(variant: str, num_labels: int = 3, **kw):
    from transformers import SegformerConfig as HFConfig

    p = VARIANTS[variant]
    return HFConfig(num_labels=num_labels, hidden_sizes=list(p["hidden_sizes"]), depths=list(p["depths"]),
                    decoder_hidden_size=p["decoder_hidden_size"], **kw)


@torch.no_grad()
def perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Move every weight off its init (LayerNorms off 1/0, BN stats off 0/1) so that a swapped key would show."""
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.05)
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b.normal_(0.0, 0.1)
        elif name.endswith("running_var"):
            b.uniform_(0.5, 1.5)
    return model.eval()


def hf_segmentation(variant: str, num_labels: int = 3, seed: int = 0, **kw):
    from transformers import SegformerForSemanticSegmentation

    torch.manual_seed(seed)
    return perturb(SegformerForSemanticSegmentation(hf_config(variant, num_labels, **kw)))


@torch.no_grad()
def hf_logits(hf, x: torch.Tensor) -> torch.Tensor:
    logits = hf(pixel_values=x).logits  # (B, C, H/4, W/4)
    return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


_REFERENCE: dict = {}


@torch.no_grad()
def max_diff(model: Segformer, hf, size: tuple[int, int], batch: int = 1) -> float:
    """Max |seglab logits - HF logits upsampled to the input| on seeded random images (HF's side is cached)."""
    x = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(1))
    key = (id(hf), size, batch)
    if key not in _REFERENCE:
        _REFERENCE[key] = hf_logits(hf, x)
    return (model.eval()(x) - _REFERENCE[key]).abs().max().item()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are small: threads gain little, and on a busy 2-core machine OpenMP's spinning made this file
    take 75-80 s instead of 13 s. The previous setting is restored for the other test files."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- config ---------------------------------------------------------------------------------------------------


def test_presets_follow_the_paper():
    c = SegformerConfig.from_variant("b0", num_classes=3)
    assert c.hidden_sizes == (32, 64, 160, 256) and c.depths == (2, 2, 2, 2) and c.decoder_hidden_size == 256
    assert c.num_heads == (1, 2, 5, 8) and c.sr_ratios == (8, 4, 2, 1)
    assert c.patch_sizes == (7, 3, 3, 3) and c.strides == (4, 2, 2, 2) and c.mlp_ratio == 4
    assert c.drop_path_rate == 0.1 and c.classifier_dropout == 0.1 and c.pad_multiple == 32
    depths = {"b1": (2, 2, 2, 2), "b2": (3, 4, 6, 3), "b3": (3, 4, 18, 3), "b4": (3, 8, 27, 3), "b5": (3, 6, 40, 3)}
    for v, d in depths.items():
        c = SegformerConfig.from_variant(f"segformer-{v}", num_classes=5)
        assert c.depths == d and c.hidden_sizes == (64, 128, 320, 512) and c.num_classes == 5 and c.variant == v
        assert c.decoder_hidden_size == (256 if v == "b1" else 768)
    assert SegformerConfig.from_variant("b2", depths=[1, 1, 1, 1]).depths == (1, 1, 1, 1)


def test_bad_options_raise_seglab_error():
    with pytest.raises(SeglabError, match="b9"):
        SegformerConfig.from_variant("b9")
    with pytest.raises(SeglabError, match="embed_size"):
        build_segformer("b0", embed_size=3)
    with pytest.raises(SeglabError, match="pad_mode"):
        build_segformer("b0", pad_mode="circular-ish")
    with pytest.raises(SeglabError, match="divisible"):
        build_segformer("b0", num_heads=(3, 2, 5, 8))
    with pytest.raises(SeglabError, match="images"):
        build_segformer("b0")(torch.rand(1, 1, 32, 32))


def test_stochastic_depth_rises_linearly():
    model = build_segformer("b2")
    rates = [blk.drop_path.p for stage in model.encoder.stages for blk in stage.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.1, 16).tolist())


def test_registry_builds_b0():
    model = build_model("segformer-b0", num_classes=3)
    assert isinstance(model, Segformer) and model.config.num_classes == 3
    assert n_params(model) == 3_714_915
    assert model.seglab_spec["name"] == "segformer-b0"


# -- parameter counts against HF --------------------------------------------------------------------------------


@requires_hf
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_param_count_equals_hf(variant):
    from transformers import SegformerForSemanticSegmentation

    if variant in ("b3", "b4", "b5"):  # count on the meta device: no memory, no init
        with torch.device("meta"):
            hf = SegformerForSemanticSegmentation(hf_config(variant))
            ours = build_segformer(variant, num_classes=3)
    else:
        hf = SegformerForSemanticSegmentation(hf_config(variant))
        ours = build_segformer(variant, num_classes=3)
    assert n_params(ours) == n_params(hf)
    if variant == "b0":
        assert n_params(ours) == 3_714_915
    # buffers too: BatchNorm's running stats and counter, nothing else
    assert len(ours.state_dict()) == len(hf.state_dict())


# -- HF parity and weight import ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def b0_checkpoints(tmp_path_factory):
    """An HF B0 (random, perturbed, eval) and its weights as a folder, .safetensors and .bin, in both namings."""
    hf = hf_segmentation("b0")
    root = tmp_path_factory.mktemp("b0")
    hf.save_pretrained(root / "folder")
    v4, v5 = v4_and_v5(hf.state_dict())
    save_file(v4, str(root / "v4.safetensors"))
    save_file(v5, str(root / "v5.safetensors"))
    torch.save(v4, root / "v4.bin")
    (root / "binfolder").mkdir()  # a folder holding pytorch_model.bin only (5.x names)
    torch.save(v5, root / "binfolder" / "pytorch_model.bin")
    return hf, root


@requires_hf
def test_hf_namings_are_known(b0_checkpoints):
    """What transformers does today: 5.x renamed the modules in memory, save_pretrained writes 4.x names."""
    import transformers

    hf, root = b0_checkpoints
    on_disk = load_file(str(root / "folder" / "model.safetensors"))
    assert is_v4(on_disk)
    if int(transformers.__version__.split(".")[0]) >= 5:
        assert "segformer.stages.0.blocks.0.attention.q_proj.weight" in hf.state_dict()
        assert "decode_head.linear_projections.0.proj.weight" in hf.state_dict()
    v4, v5 = v4_and_v5(hf.state_dict())
    assert "segformer.encoder.block.0.0.attention.self.query.weight" in v4
    assert "decode_head.linear_c.0.proj.weight" in v4
    a, b = hf_state_dict_to_seglab(v4), hf_state_dict_to_seglab(v5)
    assert a.keys() == b.keys() == build_segformer("b0").state_dict().keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@requires_hf
@pytest.mark.parametrize("source", ["folder", "v4.safetensors", "v5.safetensors", "v4.bin", "binfolder"])
def test_logits_match_hf_from_every_format(b0_checkpoints, source):
    hf, root = b0_checkpoints
    model = build_segformer("b0", num_classes=3, weights=root / source)
    assert max_diff(model, hf, (128, 128)) < TOL


@requires_hf
@pytest.mark.parametrize("size", [(512, 512), (96, 160)])
def test_logits_match_hf_b0_sizes(b0_checkpoints, size):
    hf, root = b0_checkpoints
    model = build_segformer("b0", num_classes=3, weights=root / "folder")
    assert max_diff(model, hf, size, batch=1 if size[0] > 256 else 2) < TOL


@requires_hf
@pytest.mark.parametrize("variant, size", [("b1", (128, 128)), ("b2", (96, 160))])
def test_logits_match_hf_bigger_variants(tmp_path, variant, size):
    hf = hf_segmentation(variant, seed=1)
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(tmp_path / "w.safetensors"))
    model = build_segformer(variant, num_classes=3, weights=tmp_path / "w.safetensors")
    assert max_diff(model, hf, size) < TOL


@requires_hf
@torch.no_grad()
def test_attention_maps_match_hf_eager(b0_checkpoints):
    hf, root = b0_checkpoints
    model = build_segformer("b0", num_classes=3, weights=root / "folder").eval()
    x = torch.rand(1, 3, 64, 96)
    hf.config._attn_implementation = "eager"
    try:
        theirs = hf(pixel_values=x, output_attentions=True).attentions
    finally:
        hf.config._attn_implementation = "sdpa"
    ours = model.attention_maps(x)
    assert list(ours) == [(s, b) for s in range(4) for b in range(2)]
    for a, b in zip(ours.values(), theirs):
        assert a.shape == b.shape and (a - b).abs().max().item() < 1e-5
    assert ours[(0, 0)].shape == (1, 1, 16 * 24, 2 * 3)  # (B, heads, Tq, Tk): 64x96 /4 -> 16x24, /8 -> 2x3
    assert list(model.attention_maps(x, blocks=[(3, 1)])) == [(3, 1)]
    with pytest.raises(SeglabError, match="stage, block"):
        model.attention_maps(x, blocks=[(4, 0)])


@requires_hf
@torch.no_grad()
def test_encoder_only_checkpoints_leave_the_decoder_fresh(tmp_path, caplog):
    from transformers import SegformerForImageClassification, SegformerModel

    torch.manual_seed(2)
    enc = perturb(SegformerModel(hf_config("b0")))  # 5.x: keys "stages.*"; 4.x: "encoder.*"
    v4, v5 = v4_and_v5(enc.state_dict())
    assert not any(k.startswith("segformer.") for k in v4) and any(k.startswith("encoder.") for k in v4)
    save_file(v4, str(tmp_path / "v4.safetensors"))
    save_file(v5, str(tmp_path / "v5.safetensors"))
    torch.manual_seed(3)
    cls = perturb(SegformerForImageClassification(hf_config("b0", num_labels=10)))  # "segformer.*" + "classifier.*"
    cls.save_pretrained(tmp_path / "mit")
    x = torch.rand(1, 3, 64, 96)
    for source, hf in [("v4.safetensors", enc), ("v5.safetensors", enc), ("mit", cls.segformer)]:
        torch.manual_seed(0)
        fresh = build_segformer("b0").eval()
        torch.manual_seed(0)
        with caplog.at_level(logging.INFO, logger="seglab.models.segformer"):
            model = build_segformer("b0", weights=tmp_path / source).eval()
        assert "encoder only" in caplog.text
        for k, v in fresh.decoder.state_dict().items():
            assert torch.equal(v, model.decoder.state_dict()[k]), k
        theirs = hf(pixel_values=x, output_hidden_states=True).hidden_states
        for a, b in zip(model.encoder(x), theirs):
            assert a.shape == b.shape and (a - b).abs().max().item() < TOL
    assert "image-classification head" in caplog.text


@requires_hf
def test_classifier_for_other_classes_is_reinitialised(tmp_path):
    hf = hf_segmentation("b0", num_labels=5, seed=4)
    hf.save_pretrained(tmp_path / "ade")
    with pytest.warns(UserWarning, match="5 classes.*re-initialised"):
        model = build_segformer("b0", num_classes=3, weights=tmp_path / "ade")
    assert model.decoder.classifier.weight.shape == (3, 256, 1, 1)
    assert model.decoder.classifier.weight.std().item() < 0.02  # fresh, normal(0, 0.01)
    assert torch.equal(model.decoder.fuse.weight, hf.decode_head.linear_fuse.weight)
    assert torch.equal(model.decoder.bn.running_var, hf.decode_head.batch_norm.running_var)
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)


@requires_hf
def test_unknown_missing_and_misfit_keys_raise(b0_checkpoints, tmp_path):
    hf, _ = b0_checkpoints
    v4, v5 = v4_and_v5(hf.state_dict())

    extra = {**v5, "segformer.stages.0.mystery.weight": torch.zeros(2)}
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(SeglabError, match=r"unknown key.*segformer\.stages\.0\.mystery\.weight"):
        build_segformer("b0", weights=tmp_path / "extra.safetensors")
    with pytest.raises(SeglabError, match="mystery"):
        hf_state_dict_to_seglab(extra)

    missing = {k: v for k, v in v4.items() if k != "segformer.encoder.block.1.0.attention.self.query.weight"}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(SeglabError, match=r"lacks 1 key.*encoder\.stages\.1\.blocks\.0\.attn\.q\.weight"):
        build_segformer("b0", weights=tmp_path / "missing.safetensors")

    half_decoder = {k: v for k, v in v5.items() if k != "decode_head.linear_fuse.weight"}
    save_file(half_decoder, str(tmp_path / "half.safetensors"))
    with pytest.raises(SeglabError, match=r"decoder\.fuse\.weight"):
        build_segformer("b0", weights=tmp_path / "half.safetensors")

    mixed = {**v5, "segformer.encoder.layer_norm.0.weight": v4["segformer.encoder.layer_norm.0.weight"]}
    with pytest.raises(SeglabError, match="both hold"):
        hf_state_dict_to_seglab(mixed)

    with pytest.raises(SeglabError, match="no weights"):
        build_segformer("b0", weights=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SeglabError, match="model.safetensors"):
        build_segformer("b0", weights=tmp_path / "empty")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(SeglabError, match="could not read"):
        build_segformer("b0", weights=tmp_path / "junk.safetensors")


@requires_hf
def test_wrong_variant_is_named(b0_checkpoints, tmp_path):
    hf1 = hf_segmentation("b1", seed=5)
    hf1.save_pretrained(tmp_path / "b1")
    with pytest.raises(SeglabError, match="segformer-b1.*segformer-b0"):
        build_segformer("b0", weights=tmp_path / "b1")
    save_file({k: v.contiguous() for k, v in hf1.state_dict().items()}, str(tmp_path / "b1.safetensors"))
    with pytest.raises(SeglabError,
                       match=r"checkpoint is segformer-b1: stage widths \(64, 128, 320, 512\).*wrong shape"):
        build_segformer("b0", weights=tmp_path / "b1.safetensors")
    _, root = b0_checkpoints
    with pytest.raises(SeglabError, match=r"checkpoint is segformer-b0.*model is segformer-b2"):
        build_segformer("b2", weights=root / "v5.safetensors")


def test_pickles_with_more_than_tensors_are_refused(tmp_path):
    torch.save({"w": torch.zeros(1), "evil": object()}, tmp_path / "x.bin")
    with pytest.raises(SeglabError, match="could not read"):
        build_segformer("b0", weights=tmp_path / "x.bin")


# -- any input size -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(97, 131), (33, 45), (33, 33), (1, 7), (64, 40)])
def test_odd_sizes_give_logits_of_that_size(size):
    torch.manual_seed(0)
    model = build_segformer("b0", num_classes=3).eval()
    with torch.no_grad():
        y = model(torch.rand(2, 3, *size))
    assert y.shape == (2, 3, *size) and torch.isfinite(y).all()


def test_odd_size_b1_trains_and_zero_padding_works():
    torch.manual_seed(0)
    model = build_segformer("b1", num_classes=4)
    x = torch.rand(2, 3, 97, 131)
    y = model(x)  # training mode: dropout and stochastic depth on
    assert y.shape == (2, 4, 97, 131)
    y.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    zeros = build_segformer("b0", pad_mode="zeros").eval()
    with torch.no_grad():
        assert zeros(x).shape == (2, 3, 97, 131)


@torch.no_grad()
def test_padding_only_when_needed_and_normalize_option():
    torch.manual_seed(0)
    model = build_segformer("b0").eval()
    x = torch.rand(1, 3, 64, 96)
    assert model._prepare(x).shape == x.shape
    assert model._prepare(torch.rand(1, 3, 65, 96)).shape == (1, 3, 96, 96)
    normed = build_segformer("b0", normalize=True).eval()
    normed.load_state_dict(model.state_dict())
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(normed(x), model((x - mean) / std), atol=1e-5)
    assert normed.state_dict().keys() == model.state_dict().keys()


def test_reset_classifier_changes_classes():
    model = build_segformer("b0", num_classes=3)
    model.reset_classifier(7)
    assert model.config.num_classes == 7
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 7, 32, 32)


def test_config_json_mismatch_is_checked(tmp_path):
    """A folder whose config.json says another architecture is refused before any tensor is compared."""
    model = build_segformer("b0")
    (tmp_path / "f").mkdir()
    save_file({"decode_head.linear_fuse.weight": torch.zeros(1)}, str(tmp_path / "f" / "model.safetensors"))
    (tmp_path / "f" / "config.json").write_text(json.dumps({"hidden_sizes": [64, 128, 320, 512],
                                                             "depths": [3, 4, 6, 3]}))
    with pytest.raises(SeglabError, match="segformer-b2"):
        load_hf_weights(model, tmp_path / "f")


@torch.no_grad()
def test_attention_maps_on_a_padded_input():
    torch.manual_seed(0)
    model = build_segformer("b0").eval()
    maps = model.attention_maps(torch.rand(1, 3, 97, 131), blocks=[(0, 1), (2, 0)])
    assert maps[(0, 1)].shape == (1, 1, 32 * 40, 4 * 5)  # padded to 128x160: /4 -> 32x40, sr 8 -> 4x5
    assert maps[(2, 0)].shape == (1, 5, 8 * 10, 4 * 5)  # /16 -> 8x10, sr 2 -> 4x5
    assert torch.allclose(maps[(2, 0)].sum(-1), torch.ones(1, 5, 80))


def test_fused_decoder_equals_the_plain_concat_decoder():
    """AllMLPDecoder.forward composes each stage's Linear with its block of the fuse conv; forward_concat is the
    paper's / HF's concat decoder, kept as the reference: the same function of the same parameters."""
    torch.manual_seed(0)
    model = build_segformer("b0", num_classes=5).eval()
    with torch.no_grad():
        model.decoder.bn.running_mean.uniform_(-0.5, 0.5)  # a BatchNorm that is not the identity
        model.decoder.bn.running_var.uniform_(0.5, 2.0)
        features = model.encoder(torch.rand(2, 3, 96, 160))
        fused, plain = model.decoder(features), model.decoder.forward_concat(features)
    assert fused.shape == plain.shape == (2, 5, 24, 40)
    assert torch.allclose(fused, plain, atol=1e-5)
