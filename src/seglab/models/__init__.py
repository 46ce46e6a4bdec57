"""The model registry: build_model(name, num_classes=3, image_size=128, **overrides) and list_models().

Every model takes images (B, 3, H, W) in [0, 1] and returns logits (B, num_classes, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

from torch import nn

from ..errors import SeglabError, check_known
from .vit import VisionTransformerArgs, VisionTransformerForSegmentation


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., nn.Module]  # (num_classes, image_size, **overrides) -> model
    description: str
    published: str = ""  # the figure the article or paper gives, if any
    tiny: dict[str, Any] = field(default_factory=dict)  # overrides for a tiny model of the same kind (tests, docs)
    # The side of the images its pretrained encoder was trained at (EfficientNet-Lite: 224, 240, 260), if it has one;
    # input_scale="auto" resizes an image of the model's image_size to it for the encoder.
    native_resolution: int | None = None


def _vit(**preset: Any) -> Callable[..., nn.Module]:
    def build(num_classes: int, image_size: int, **overrides: Any) -> nn.Module:
        check_known(overrides, (f.name for f in fields(VisionTransformerArgs)), " for a ViT")
        kwargs = {**preset, **overrides, "image_size": image_size, "out_channels": num_classes}
        try:
            args = VisionTransformerArgs(**kwargs)
        except ValueError as e:
            raise SeglabError(f"invalid ViT options: {e}") from None
        return VisionTransformerForSegmentation(args)

    return build


def _segformer(variant: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, image_size: int, **overrides: Any) -> nn.Module:
        from .segformer_hf import build_segformer  # imported on use: the modules are large

        return build_segformer(variant, num_classes=num_classes, image_size=image_size, **overrides)

    return build


def _segnet(separable: bool, faithful: bool) -> Callable[..., nn.Module]:
    def build(num_classes: int, image_size: int, **overrides: Any) -> nn.Module:
        from .cnn import build_segnet

        fixed = sorted({"separable", "faithful"} & set(overrides))
        if fixed:
            raise SeglabError(f"{', '.join(fixed)} is fixed by the model name; choose segnet, segnet-head, "
                              "segnet-dsc or segnet-dsc-head instead")

        return build_segnet(num_classes=num_classes, image_size=image_size, separable=separable,
                            faithful=faithful, **overrides)

    return build


_REGISTRY: dict[str, ModelEntry] = {}


def _register(entry: ModelEntry) -> None:
    _REGISTRY[entry.name] = entry


_TINY_VIT = {"embed_size": 32, "num_blocks": 1, "num_heads": 2}
_register(ModelEntry("vit", _vit(), "the article's ViT: 16x16 patches, 768 wide, 12 blocks, 8 heads",
                     "86.28M params; 85.89% pixel acc. (article)", tiny=_TINY_VIT))
_register(ModelEntry("vit-p8", _vit(patch_size=8), "the article's ViT with 8x8 patches (4x the tokens)",
                     tiny=_TINY_VIT))
_register(ModelEntry("vit-mlp-head", _vit(head="mlp"), "the article's ViT with an MLP output head", tiny=_TINY_VIT))
_register(ModelEntry("vit-upsample", _vit(head="upsample"), "the article's ViT with a learned upsampling head",
                     tiny=_TINY_VIT))
_register(ModelEntry("vit-small", _vit(embed_size=192, num_blocks=4, num_heads=3, patch_size=8, dropout=0.1),
                     "a small ViT (192 wide, 4 blocks, 8x8 patches) for CPU runs and the demo", tiny=_TINY_VIT))
# The paper's ADE20K figures (150 classes; B5 at 640x640, the others at 512x512): parameters and GMACs.
_SEGFORMER_PAPER = {"b0": ("3.8M", 8.4, 512), "b1": ("13.7M", 15.9, 512), "b2": ("27.5M", 62.4, 512),
                    "b3": ("47.3M", 79.0, 512), "b4": ("64.1M", 95.7, 512), "b5": ("84.7M", 183.3, 640)}
for _v, (_params, _gmacs, _size) in _SEGFORMER_PAPER.items():
    _register(ModelEntry(f"segformer-{_v}", _segformer(_v), f"SegFormer-{_v.upper()} (Xie et al. 2021)",
                         f"{_params} params, {_gmacs} GMACs at {_size} (paper, 150 classes)",
                         tiny={"hidden_sizes": (8, 16, 40, 64), "depths": (1, 1, 1, 1), "decoder_hidden_size": 16}))
_TINY_SEGNET = {"widths": (4, 8, 8, 8), "depths": (1, 1, 1, 1)}  # still four poolings: multiples of 16


def _encoder_decoder(head: str, variant: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, image_size: int, **overrides: Any) -> nn.Module:
        from .heads import build_efficientnet_model

        name = f"{head}-efficientnet-{variant}"
        check_known(overrides, ("encoder_weights", "input_scale"), f" for {name}")
        try:
            return build_efficientnet_model(head, num_classes, image_size, variant=variant, **overrides)
        except ValueError as e:
            raise SeglabError(f"invalid {name} options: {e}") from None

    return build


_register(ModelEntry("segnet", _segnet(False, True), "the series' SegNet-style CNN (Part 2), faithful final ReLU",
                     "15,274,892 params; 88.28% pixel acc.", tiny=_TINY_SEGNET))
_register(ModelEntry("segnet-head", _segnet(False, False),
                     "segnet with a 1x1 classifier head instead of the final ReLU", tiny=_TINY_SEGNET))
_register(ModelEntry("segnet-dsc", _segnet(True, True), "segnet with depthwise-separable convs (Part 3)",
                     "1,749,671 params", tiny=_TINY_SEGNET))
_register(ModelEntry("segnet-dsc-head", _segnet(True, False), "segnet-dsc with a 1x1 classifier head",
                     tiny=_TINY_SEGNET))
# EfficientNet-Lite (models/encoders.py): title, native resolution, and the ImageNet classifier's figures: its exact
# parameter count (the weights packages' files), and the TF reference's published parameters, multiply-adds and
# top-1. The segmentation models drop its 1280-wide head and classifier; `seglab models` counts what they hold.
_LITE_PAPER = {"lite0": ("EfficientNet-Lite0", 224, 4_652_008, "4.7M", "407M", "75.1%"),
               "lite1": ("EfficientNet-Lite1", 240, 5_416_680, "5.4M", "631M", "76.7%"),
               "lite2": ("EfficientNet-Lite2", 260, 6_092_072, "6.1M", "899M", "77.6%")}
_HEAD_TEXT = {"lraspp": "LR-ASPP head (MobileNetV3's)", "fpn": "FPN head", "unet": "U-Net decoder"}
for _variant, (_title, _native, _exact, _params, _madds, _top1) in _LITE_PAPER.items():
    for _head, _text in _HEAD_TEXT.items():
        _register(ModelEntry(
            f"{_head}-efficientnet-{_variant}", _encoder_decoder(_head, _variant),
            f"{_title} encoder + {_text}; encoder_weights=imagenet, input_scale=1-4 or auto ({_native} px)",
            f"encoder {_title} @{_native}: {_exact:,} params with its ImageNet classifier (TF: {_params}, "
            f"{_madds} MAdds, {_top1} top-1)",
            native_resolution=_native))


def _pretrained_vit(num_classes: int, image_size: int, **overrides: Any) -> nn.Module:
    from .vit_pretrained import build_pretrained_vit

    return build_pretrained_vit(num_classes, image_size, **overrides)


_register(ModelEntry("vit-b16", _pretrained_vit,
                     "the article's ViT on a ViT-B/16 backbone (12 heads) for HF ViTModel weights, "
                     "e.g. encoder_weights=hf:google/vit-base-patch16-224-in21k", "86M params (ViT-B/16)",
                     tiny=_TINY_VIT))


def list_models() -> list[str]:
    """Names of the registered models."""
    return list(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise SeglabError(f"unknown model {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def build_model(name: str, num_classes: int = 3, image_size: int = 128, **overrides: Any) -> nn.Module:
    """Build a registered model; overrides change its config fields (e.g. embed_size=512 for `vit`).

    The returned module carries `seglab_spec` (name, num_classes, image_size, overrides) so checkpoints can
    rebuild it.
    """
    if num_classes < 1:
        raise SeglabError(f"num_classes must be at least 1, not {num_classes}")
    if image_size < 1:
        raise SeglabError(f"image_size must be positive, not {image_size}")
    model = model_entry(name).build(num_classes, image_size, **overrides)
    model.seglab_spec = {"name": name, "num_classes": num_classes, "image_size": image_size,
                         "overrides": {k: v for k, v in overrides.items() if k not in ("weights", "encoder_weights")}}
    return model


__all__ = [
    "VisionTransformerArgs",
    "VisionTransformerForSegmentation",
    "build_model",
    "list_models",
    "model_entry",
]
