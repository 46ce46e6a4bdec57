"""SegFormer (Xie et al. 2021) from scratch: a Mix Transformer (MiT) encoder and an all-MLP decoder.

Encoder: 4 stages, each an overlapping patch embedding (strided conv + LayerNorm), transformer blocks with
efficient self-attention (keys and values shortened by a strided "sequence reduction" conv + LayerNorm) and a
Mix-FFN (Linear -> 3x3 depthwise conv -> GELU -> Linear), then a LayerNorm. No position embeddings: the
depthwise conv and the zero-padded overlapping convs carry position. Decoder: each stage's features -> Linear to
one width -> bilinear upsample to H/4 -> concat (deepest stage first, as HF) -> 1x1 conv (no bias) + BatchNorm +
ReLU -> dropout -> 1x1 classifier; the H/4 logits are upsampled bilinearly to the input size.

Any input size works: an input whose sides are not multiples of `SegformerConfig.pad_multiple` (32 for every
preset) is padded at the bottom and right by reflection (replication where the image is too small to reflect),
run, and the logits are cropped back. Inputs that are multiples of 32 are not padded, so results equal HF
transformers' SegformerForSemanticSegmentation (followed by a bilinear upsample of its H/4 logits).

Parameter counts equal HF's for the same config (B0 with 3 classes: 3,714,915). `build_segformer(..., weights=path)`
loads HF checkpoints offline, in the key names of transformers 4.x and 5.x (see `hf_state_dict_to_seglab`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SeglabError
from .layers import DropPath

logger = logging.getLogger(__name__)

# The paper's / HF's presets; every variant shares heads (1, 2, 5, 8), sr ratios (8, 4, 2, 1), patch sizes
# (7, 3, 3, 3), strides (4, 2, 2, 2) and mlp ratio 4.
VARIANTS: dict[str, dict[str, Any]] = {
    "b0": {"hidden_sizes": (32, 64, 160, 256), "depths": (2, 2, 2, 2), "decoder_hidden_size": 256},
    "b1": {"hidden_sizes": (64, 128, 320, 512), "depths": (2, 2, 2, 2), "decoder_hidden_size": 256},
    "b2": {"hidden_sizes": (64, 128, 320, 512), "depths": (3, 4, 6, 3), "decoder_hidden_size": 768},
    "b3": {"hidden_sizes": (64, 128, 320, 512), "depths": (3, 4, 18, 3), "decoder_hidden_size": 768},
    "b4": {"hidden_sizes": (64, 128, 320, 512), "depths": (3, 8, 27, 3), "decoder_hidden_size": 768},
    "b5": {"hidden_sizes": (64, 128, 320, 512), "depths": (3, 6, 40, 3), "decoder_hidden_size": 768},
}
PAD_MODES = ("reflect", "replicate", "zeros")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_TUPLE_FIELDS = ("hidden_sizes", "depths", "num_heads", "sr_ratios", "patch_sizes", "strides")


@dataclass
class SegformerConfig:
    """SegFormer's configuration; the defaults are B0's. `SegformerConfig.from_variant("b2", num_classes=3)`.

    layer_norm_eps: HF's config says 1e-6 (the original MiT code's value), but HF's modeling code never reads
    it and builds every LayerNorm with PyTorch's default 1e-5, so HF checkpoints ran with 1e-5; seglab does too.
    normalize: subtract ImageNet's mean and divide by its std inside forward (what HF's image processor does to
    pixels in [0, 1]); turn it on when fine-tuning ImageNet-pretrained weights on seglab's [0, 1] images.
    """

    num_classes: int = 3
    in_channels: int = 3
    hidden_sizes: tuple[int, ...] = (32, 64, 160, 256)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (1, 2, 5, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    patch_sizes: tuple[int, ...] = (7, 3, 3, 3)
    strides: tuple[int, ...] = (4, 2, 2, 2)
    mlp_ratio: int = 4
    decoder_hidden_size: int = 256
    drop_path_rate: float = 0.1  # stochastic depth, rising linearly from 0 to this over all blocks
    hidden_dropout: float = 0.0  # HF's hidden_dropout_prob: after attention and inside the Mix-FFN
    attention_dropout: float = 0.0  # on the attention weights
    classifier_dropout: float = 0.1  # before the 1x1 classifier
    layer_norm_eps: float = 1e-5
    image_size: int = 128  # the nominal (training) size; any input size works
    pad_mode: str = "reflect"  # how inputs that are not multiples of pad_multiple are padded: reflect, replicate, zeros
    normalize: bool = False

    def __post_init__(self) -> None:
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, int):
                raise TypeError(f"{name} must be a sequence of {len(self.hidden_sizes)} ints, not {value}")
            setattr(self, name, tuple(int(v) for v in value))
        n = len(self.hidden_sizes)
        for name in _TUPLE_FIELDS:
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, hidden_sizes has {n}")
            if any(v < 1 for v in getattr(self, name)):
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        for c, h in zip(self.hidden_sizes, self.num_heads):
            if c % h:
                raise ValueError(f"hidden size {c} is not divisible by its number of heads {h}")
        for name in ("num_classes", "in_channels", "mlp_ratio", "decoder_hidden_size", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("drop_path_rate", "hidden_dropout", "attention_dropout", "classifier_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), not {getattr(self, name)}")
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, not {self.pad_mode!r}")

    @property
    def pad_multiple(self) -> int:
        """Input sides that are multiples of this run without padding: every stride and sequence reduction is exact."""
        multiple, total_stride = 1, 1
        for stride, sr in zip(self.strides, self.sr_ratios):
            total_stride *= stride
            multiple = math.lcm(multiple, total_stride * sr)
        return multiple

    @property
    def variant(self) -> str | None:
        """The preset ("b0" .. "b5") whose encoder and decoder widths this config has, or None."""
        return _variant_of(self.hidden_sizes, self.depths, self.decoder_hidden_size)

    @classmethod
    def from_variant(cls, variant: str, num_classes: int = 3, **overrides: Any) -> SegformerConfig:
        """The preset for "b0" .. "b5" (or "segformer-b0" ..), with fields changed by overrides."""
        key = variant.lower().removeprefix("segformer-").removeprefix("mit-")
        if key not in VARIANTS:
            raise SeglabError(f"unknown SegFormer variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise SeglabError(
                f"unknown option(s) for a SegFormer: {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
            )
        try:
            return cls(**{**VARIANTS[key], "num_classes": num_classes, **overrides})
        except (TypeError, ValueError) as e:
            raise SeglabError(f"invalid SegFormer options: {e}") from None


def _variant_of(hidden_sizes: Iterable[int], depths: Iterable[int], decoder_hidden_size: int | None) -> str | None:
    for name, preset in VARIANTS.items():
        same_encoder = tuple(hidden_sizes) == preset["hidden_sizes"] and tuple(depths) == preset["depths"]
        if same_encoder and decoder_hidden_size in (None, preset["decoder_hidden_size"]):
            return name
    return None


class OverlapPatchEmbed(nn.Module):
    """Strided conv with overlapping windows (kernel > stride, zero padding kernel//2) -> tokens -> LayerNorm."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, stride: int, eps: float):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)  # (B, C, h, w), h = ceil(H / stride)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # (B, h*w, C)
        return self.norm(x), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys and values come from a grid shrunk sr x sr by a strided conv (+ LayerNorm).

    Queries: all N = h*w tokens; keys/values: M = (h/sr)*(w/sr) tokens, so the cost is N*M instead of N*N.
    Runs on F.scaled_dot_product_attention; `attention_map` computes the weights explicitly for figures.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, attn_dropout: float, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.sr_ratio = sr_ratio
        self.attn_dropout = attn_dropout
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.sr_norm = nn.LayerNorm(dim, eps=eps)

    def _qkv(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, N, C = x.shape
        nh, d = self.num_heads, self.head_dim
        q = self.q(x).view(B, N, nh, d).transpose(1, 2)  # (B, nh, N, d)
        kv = x
        if self.sr_ratio > 1:
            kv = x.transpose(1, 2).reshape(B, C, h, w)  # (B, C, h, w)
            kv = self.sr(kv).flatten(2).transpose(1, 2)  # (B, M, C), M = (h/sr)*(w/sr)
            kv = self.sr_norm(kv)
        M = kv.shape[1]
        k = self.k(kv).view(B, M, nh, d).transpose(1, 2)  # (B, nh, M, d)
        v = self.v(kv).view(B, M, nh, d).transpose(1, 2)  # (B, nh, M, d)
        return q, k, v

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self._qkv(x, h, w)
        dropout_p = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (B, nh, N, d)
        y = y.transpose(1, 2).reshape(B, N, C)  # (B, N, C)
        return self.proj(y)

    def attention_map(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Attention weights (B, heads, N, M) for tokens x (B, N, C) of an h x w grid."""
        q, k, _ = self._qkv(x, h, w)
        return torch.softmax(q @ k.transpose(-2, -1) * self.head_dim**-0.5, dim=-1)  # (B, nh, N, M)


class MixFFN(nn.Module):
    """Linear(C, rC) -> 3x3 depthwise conv on the token grid -> GELU -> Linear(rC, C), with dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        B = x.shape[0]
        x = self.fc1(x)  # (B, N, rC)
        x = x.transpose(1, 2).reshape(B, -1, h, w)  # (B, rC, h, w)
        x = self.dwconv(x).flatten(2).transpose(1, 2)  # (B, N, rC)
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))  # (B, N, C)


class MixBlock(nn.Module):
    """Pre-LayerNorm block: x + drop_path(attn(norm1(x))), then x + drop_path(mix_ffn(norm2(x)))."""

    def __init__(self, config: SegformerConfig, stage: int, drop_path: float):
        super().__init__()
        dim, eps = config.hidden_sizes[stage], config.layer_norm_eps
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = EfficientSelfAttention(dim, config.num_heads[stage], config.sr_ratios[stage],
                                           config.attention_dropout, eps)
        self.drop = nn.Dropout(config.hidden_dropout)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MixFFN(dim, dim * config.mlp_ratio, config.hidden_dropout)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.drop(self.attn(self.norm1(x), h, w)))  # (B, N, C)
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))  # (B, N, C)


class MixStage(nn.Module):
    """One encoder stage: overlapping patch embedding -> blocks -> LayerNorm; returns a feature map."""

    def __init__(self, config: SegformerConfig, stage: int, drop_paths: list[float]):
        super().__init__()
        in_channels = config.in_channels if stage == 0 else config.hidden_sizes[stage - 1]
        dim = config.hidden_sizes[stage]
        self.patch_embed = OverlapPatchEmbed(in_channels, dim, config.patch_sizes[stage], config.strides[stage],
                                             config.layer_norm_eps)
        self.blocks = nn.ModuleList(MixBlock(config, stage, p) for p in drop_paths)
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = self.patch_embed(x)  # (B, N, C), N = h*w
        for block in self.blocks:
            x = block(x, h, w)  # (B, N, C)
        x = self.norm(x)
        return x.transpose(1, 2).reshape(x.shape[0], -1, h, w)  # (B, C, h, w)


class MixTransformer(nn.Module):
    """The MiT encoder: images (B, 3, H, W) -> 4 feature maps at H/4, H/8, H/16, H/32."""

    def __init__(self, config: SegformerConfig):
        super().__init__()
        total = sum(config.depths)
        rates = [config.drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linear, 0 .. rate
        starts = [sum(config.depths[:i]) for i in range(len(config.depths))]
        self.stages = nn.ModuleList(
            MixStage(config, i, rates[s : s + d]) for i, (s, d) in enumerate(zip(starts, config.depths))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)  # (B, C_i, H/4/2^i, W/4/2^i)
            features.append(x)
        return features


class AllMLPDecoder(nn.Module):
    """Per-stage Linear to one width D -> upsample to H/4 -> concat -> 1x1 conv + BN + ReLU -> dropout -> 1x1 classifier."""

    def __init__(self, config: SegformerConfig):
        super().__init__()
        D, n = config.decoder_hidden_size, len(config.hidden_sizes)
        self.linear = nn.ModuleList(nn.Linear(c, D) for c in config.hidden_sizes)
        self.fuse = nn.Conv2d(n * D, D, 1, bias=False)
        self.bn = nn.BatchNorm2d(D)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Conv2d(D, config.num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        # fuse(concat_i(upsample(linear_i(f_i)))) is computed as sum_i upsample(W_i linear_i(f_i)), W_i being the
        # fuse conv's block for stage i: the per-stage Linear and the 1x1 fuse conv mix channels, the bilinear
        # upsampling mixes pixels with weights that sum to 1 (so biases pass through), hence they commute and each
        # stage's Linear composes with W_i into one (D, C_i) map applied at the stage's own resolution. The same
        # function as HF's (equal up to float rounding; same parameters), with a fraction of the decoder's
        # multiply-adds and no concatenation: about 2x the training images/s of SegFormer-B0 at 128x128 on a CPU
        # (benchmarks/results/segformer-decoder-cpu.*).
        size = features[0].shape[-2:]
        n, D = len(features), self.fuse.out_channels
        fuse = self.fuse.weight.flatten(1)  # (D, n*D): input blocks deepest stage first (HF's concat order)
        x = None
        for i, (feature, linear) in enumerate(zip(features, self.linear)):
            w_i = fuse[:, (n - 1 - i) * D:(n - i) * D]  # (D, D)
            y = F.conv2d(feature, (w_i @ linear.weight)[:, :, None, None], w_i @ linear.bias)  # (B, D, h, w)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)  # (B, D, H/4, W/4)
            x = y if x is None else x + y
        x = self.drop(self.act(self.bn(x)))  # (B, D, H/4, W/4)
        return self.classifier(x)  # (B, classes, H/4, W/4)


def _init_weights(m: nn.Module) -> None:
    """The original MiT initialisation: normal(0.02) Linear, He-normal (fan out) convs, zero biases.

    (MiT calls trunc_normal_(std=.02), whose default bounds are +-2 absolute, i.e. 100 std: a plain normal.)
    """
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class Segformer(nn.Module):
    """SegFormer for segmentation: images (B, 3, H, W) -> logits (B, num_classes, H, W), for any H and W."""

    def __init__(self, config: SegformerConfig):
        super().__init__()
        self.config = config
        self.encoder = MixTransformer(config)
        self.decoder = AllMLPDecoder(config)
        if config.normalize:
            mean = torch.tensor(IMAGENET_MEAN[: config.in_channels]).view(1, -1, 1, 1)
            std = torch.tensor(IMAGENET_STD[: config.in_channels]).view(1, -1, 1, 1)
            self.register_buffer("pixel_mean", mean, persistent=False)
            self.register_buffer("pixel_std", std, persistent=False)
        self.apply(_init_weights)
        self.reset_classifier()

    @torch.no_grad()
    def reset_classifier(self, num_classes: int | None = None) -> None:
        """Re-initialise the 1x1 classifier (normal, std 0.01), with num_classes outputs if given."""
        if num_classes is not None and num_classes != self.config.num_classes:
            if num_classes < 1:
                raise SeglabError(f"num_classes must be at least 1, not {num_classes}")
            old = self.decoder.classifier
            self.decoder.classifier = nn.Conv2d(old.in_channels, num_classes, 1).to(old.weight.device,
                                                                                    old.weight.dtype)
            self.config.num_classes = num_classes
        nn.init.normal_(self.decoder.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.decoder.classifier.bias)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Check, normalise if configured, and pad the bottom/right up to a multiple of config.pad_multiple."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise SeglabError(f"SegFormer expects images (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        if self.config.normalize:
            x = (x - self.pixel_mean) / self.pixel_std
        H, W = x.shape[-2:]
        m = self.config.pad_multiple
        ph, pw = -H % m, -W % m
        if ph or pw:
            mode = self.config.pad_mode
            if mode == "reflect" and (ph >= H or pw >= W):
                mode = "replicate"  # reflection needs the pad to be smaller than the side
            if mode == "zeros":
                x = F.pad(x, (0, pw, 0, ph))
            else:
                x = F.pad(x, (0, pw, 0, ph), mode=mode)  # (B, 3, Hp, Wp)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        x = self._prepare(x)  # (B, 3, Hp, Wp), padded only when H or W is not a multiple of 32
        features = self.encoder(x)  # 4 x (B, C_i, Hp/2^(i+2), Wp/2^(i+2))
        logits = self.decoder(features)  # (B, classes, Hp/4, Wp/4)
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)  # (B, classes, Hp, Wp)
        if logits.shape[-2:] != (H, W):
            logits = logits[..., :H, :W].contiguous()  # (B, classes, H, W)
        return logits

    def attention_maps(
        self, x: torch.Tensor, blocks: Iterable[tuple[int, int]] | None = None
    ) -> dict[tuple[int, int], torch.Tensor]:
        """Attention weights {(stage, block): (B, heads, Tq, Tk)} for images x, for the chosen blocks (default all).

        Tq = h*w tokens of the stage's grid (of the padded input, when x is padded), Tk = Tq / sr_ratio^2 keys.
        """
        all_blocks = [(s, b) for s, stage in enumerate(self.encoder.stages) for b in range(len(stage.blocks))]
        wanted = set(all_blocks if blocks is None else (tuple(sb) for sb in blocks))
        bad = sorted(wanted - set(all_blocks))
        if bad:
            raise SeglabError(f"no such (stage, block) in this SegFormer: {bad}; depths are {self.config.depths}")
        maps: dict[tuple[int, int], torch.Tensor] = {}
        t = self._prepare(x)
        for s, stage in enumerate(self.encoder.stages):
            t, h, w = stage.patch_embed(t)  # (B, N, C)
            for b, block in enumerate(stage.blocks):
                if (s, b) in wanted:
                    maps[(s, b)] = block.attn.attention_map(block.norm1(t), h, w)  # (B, heads, N, M)
                t = block(t, h, w)
            if len(maps) == len(wanted):
                break
            t = stage.norm(t).transpose(1, 2).reshape(t.shape[0], -1, h, w)  # (B, C, h, w)
        return maps


def build_segformer(
    variant: str,
    num_classes: int = 3,
    image_size: int = 128,
    weights: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> Segformer:
    """A SegFormer of a preset ("b0" .. "b5"), optionally with HF weights from a local file or folder."""
    config = SegformerConfig.from_variant(variant, num_classes=num_classes, image_size=image_size, **overrides)
    model = Segformer(config)
    if weights is not None:
        load_hf_weights(model, weights)
    return model


# ---------------------------------------------------------------------------------------------------------------
# HF weight import.
# On disk (save_pretrained, in transformers 4.x and 5.x alike) and in 4.x's state_dict(), keys are 4.x names:
#   segformer.encoder.patch_embeddings.{i}.proj / .layer_norm, segformer.encoder.block.{i}.{j}.layer_norm_1,
#   .attention.self.query|key|value|sr|layer_norm, .attention.output.dense, .layer_norm_2, .mlp.dense1,
#   .mlp.dwconv.dwconv, .mlp.dense2; segformer.encoder.layer_norm.{i}; decode_head.linear_c.{i}.proj,
#   decode_head.linear_fuse, decode_head.batch_norm, decode_head.classifier.
# transformers 5.x renames modules in memory (its state_dict()): segformer.stages.{i}.patch_embeddings.*,
#   segformer.stages.{i}.blocks.{j}.layernorm_before, .attention.q_proj|k_proj|v_proj|o_proj,
#   .attention.sequence_reduction.sequence_reduction|layer_norm, .layernorm_after, .mlp.fc1|dwconv.dwconv|fc2,
#   segformer.stages.{i}.layer_norm, decode_head.linear_projections.{i}.proj (the rest as 4.x).
# Encoder-only checkpoints: SegformerModel has no "segformer." prefix; SegformerForImageClassification (the
# ImageNet MiT checkpoints) adds an image classifier "classifier.weight|bias", which is dropped.
# ---------------------------------------------------------------------------------------------------------------

_BLOCK_KEYS = {  # inside block (stage i, block j): 4.x and 5.x name -> seglab name
    "layer_norm_1": "norm1", "layernorm_before": "norm1",
    "attention.self.query": "attn.q", "attention.q_proj": "attn.q",
    "attention.self.key": "attn.k", "attention.k_proj": "attn.k",
    "attention.self.value": "attn.v", "attention.v_proj": "attn.v",
    "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
    "attention.self.sr": "attn.sr", "attention.sequence_reduction.sequence_reduction": "attn.sr",
    "attention.self.layer_norm": "attn.sr_norm", "attention.sequence_reduction.layer_norm": "attn.sr_norm",
    "layer_norm_2": "norm2", "layernorm_after": "norm2",
    "mlp.dense1": "mlp.fc1", "mlp.fc1": "mlp.fc1",
    "mlp.dwconv.dwconv": "mlp.dwconv",
    "mlp.dense2": "mlp.fc2", "mlp.fc2": "mlp.fc2",
}
_WB = r"(weight|bias)"
_KEY_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), r) for p, r in [
        # transformers 4.x (and every file save_pretrained writes)
        (rf"(?:segformer\.)?encoder\.patch_embeddings\.(\d+)\.proj\.{_WB}", r"encoder.stages.\1.patch_embed.proj.\2"),
        (rf"(?:segformer\.)?encoder\.patch_embeddings\.(\d+)\.layer_norm\.{_WB}", r"encoder.stages.\1.patch_embed.norm.\2"),
        (rf"(?:segformer\.)?encoder\.block\.(\d+)\.(\d+)\.(.+)\.{_WB}", r"encoder.stages.\1.blocks.\2.{}.\4"),
        (rf"(?:segformer\.)?encoder\.layer_norm\.(\d+)\.{_WB}", r"encoder.stages.\1.norm.\2"),
        # transformers 5.x in memory
        (rf"(?:segformer\.)?stages\.(\d+)\.patch_embeddings\.proj\.{_WB}", r"encoder.stages.\1.patch_embed.proj.\2"),
        (rf"(?:segformer\.)?stages\.(\d+)\.patch_embeddings\.layer_norm\.{_WB}", r"encoder.stages.\1.patch_embed.norm.\2"),
        (rf"(?:segformer\.)?stages\.(\d+)\.blocks\.(\d+)\.(.+)\.{_WB}", r"encoder.stages.\1.blocks.\2.{}.\4"),
        (rf"(?:segformer\.)?stages\.(\d+)\.layer_norm\.{_WB}", r"encoder.stages.\1.norm.\2"),
        # decoder, both
        (rf"decode_head\.(?:linear_c|linear_projections)\.(\d+)\.proj\.{_WB}", r"decoder.linear.\1.\2"),
        (r"decode_head\.linear_fuse\.weight", "decoder.fuse.weight"),
        (r"decode_head\.batch_norm\.(weight|bias|running_mean|running_var|num_batches_tracked)", r"decoder.bn.\1"),
        (rf"decode_head\.classifier\.{_WB}", r"decoder.classifier.\1"),
    ]
]
_IMAGE_CLASSIFIER = re.compile(rf"classifier\.{_WB}")  # SegformerForImageClassification's head: dropped


def _seglab_key(key: str) -> str | None:
    for pattern, template in _KEY_RULES:
        m = pattern.fullmatch(key)
        if m is None:
            continue
        if "{}" in template:  # a block parameter: map its inner name
            inner = _BLOCK_KEYS.get(m.group(3))
            return None if inner is None else m.expand(template).format(inner)
        return m.expand(template)
    return None


def _map_keys(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """(seglab state dict, dropped image-classifier keys, unknown keys)."""
    mapped: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    dropped, unknown = [], []
    for key, value in state_dict.items():
        new = _seglab_key(key)
        if new is None:
            (dropped if _IMAGE_CLASSIFIER.fullmatch(key) else unknown).append(key)
            continue
        if new in mapped:
            raise SeglabError(f"checkpoint keys {source[new]!r} and {key!r} both hold seglab's {new!r}")
        mapped[new], source[new] = value, key
    return mapped, dropped, unknown


def hf_state_dict_to_seglab(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an HF Segformer state dict (transformers 4.x or 5.x names) to seglab's names.

    Accepts SegformerForSemanticSegmentation, SegformerModel and SegformerForImageClassification checkpoints
    (the image classifier `classifier.*` is dropped). Keys it does not know raise SeglabError listing them.
    """
    mapped, _, unknown = _map_keys(state_dict)
    if unknown:
        raise SeglabError(f"{len(unknown)} key(s) are not HF Segformer weights: {_listing(unknown)}")
    return mapped


def _listing(keys: list[str], limit: int = 20) -> str:
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        if suffix in (".bin", ".pt", ".pth"):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        elif suffix == ".json":  # a sharded checkpoint's index
            weight_map = json.loads(path.read_text())["weight_map"]
            loaded = {}
            for shard in sorted(set(weight_map.values())):
                loaded.update(_read_tensors(path.parent / shard))
        else:
            raise SeglabError(f"{path}: not a checkpoint seglab reads (.safetensors, .bin, .pt, .pth or an index .json)")
    except SeglabError:
        raise
    except Exception as e:  # noqa: BLE001 - an untrusted file fails in many ways: corrupt, unsafe pickle, bad index
        # torch's own message for a refused pickle runs to a page; keep its first line, which says why.
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if isinstance(e, pickle.UnpicklingError):
            first = "it holds pickled objects other than tensors, which seglab refuses to load"
        raise SeglabError(f"could not read weights from {path}: {type(e).__name__}: {first}") from None
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise SeglabError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(loaded)


def read_hf_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(state dict, config.json as a dict or None) from a checkpoint folder or a .safetensors / .bin file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SeglabError(f"no weights at {path}: give a checkpoint folder or a .safetensors / .bin file")
    config = None
    if path.is_dir():
        names = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
        found = [path / n for n in names if (path / n).is_file()]
        if not found:
            raise SeglabError(f"{path} holds none of: {', '.join(names)}")
        if (path / "config.json").is_file():
            try:
                config = json.loads((path / "config.json").read_text())
            except (OSError, ValueError) as e:
                raise SeglabError(f"could not read {path / 'config.json'}: {e}") from None
        path = found[0]
    return _read_tensors(path), config


def _check_hf_config(hf: Mapping[str, Any], config: SegformerConfig, where: str) -> None:
    pairs = [("hidden_sizes", "hidden_sizes"), ("depths", "depths"), ("num_attention_heads", "num_heads"),
             ("sr_ratios", "sr_ratios"), ("patch_sizes", "patch_sizes"), ("strides", "strides"),
             ("num_channels", "in_channels")]
    diffs = []
    for hf_name, name in pairs:
        if hf_name in hf:
            theirs, ours = hf[hf_name], getattr(config, name)
            if (tuple(theirs) if isinstance(theirs, list) else theirs) != ours:
                diffs.append(f"{hf_name} {theirs} (model: {ours})")
    ratios = hf.get("mlp_ratios")
    if isinstance(ratios, list) and any(r != config.mlp_ratio for r in ratios):
        diffs.append(f"mlp_ratios {ratios} (model: {config.mlp_ratio})")
    if diffs:
        theirs = _variant_of(hf.get("hidden_sizes", ()), hf.get("depths", ()), None)
        raise SeglabError(
            f"the checkpoint at {where} is {'segformer-' + theirs if theirs else 'another SegFormer'}, the model is "
            f"{'segformer-' + config.variant if config.variant else 'a custom SegFormer'}: {'; '.join(diffs)}"
        )


def _architecture_hint(mapped: Mapping[str, torch.Tensor], config: SegformerConfig) -> str:
    """' (the checkpoint is segformer-b1: widths .., depths ..; the model ..)' when the encoders differ, else ''."""
    widths: dict[int, int] = {}
    depths: dict[int, int] = {}
    for k, v in mapped.items():
        m = re.fullmatch(r"encoder\.stages\.(\d+)\.(?:norm\.weight|blocks\.(\d+)\..*)", k)
        if m is None:
            continue
        stage = int(m.group(1))
        if m.group(2) is None:
            widths[stage] = v.shape[0]
        else:
            depths[stage] = max(depths.get(stage, 0), int(m.group(2)) + 1)
    theirs_w = tuple(widths[i] for i in sorted(widths))
    theirs_d = tuple(depths[i] for i in sorted(depths))
    if not theirs_w or (theirs_w, theirs_d) == (config.hidden_sizes, config.depths):
        return ""
    name = _variant_of(theirs_w, theirs_d, None)
    ours = config.variant
    return (f" (the checkpoint is {'segformer-' + name if name else 'another SegFormer'}: stage widths {theirs_w}, "
            f"depths {theirs_d}; the model is {'segformer-' + ours if ours else 'a custom SegFormer'}: "
            f"{config.hidden_sizes}, {config.depths})")


def load_hf_weights(model: Segformer, path: str | os.PathLike[str]) -> None:
    """Load an HF Segformer checkpoint (folder or file, transformers 4.x or 5.x names) into model, in place.

    Full segmentation checkpoints load whole, except a classifier for another number of classes, which is
    re-initialised (with a warning). Encoder-only checkpoints (SegformerModel, the ImageNet MiT ones) leave the
    decoder freshly initialised. Unknown, missing or mis-shaped keys raise SeglabError listing them.
    """
    state_dict, hf_config = read_hf_checkpoint(path)
    if hf_config is not None:
        _check_hf_config(hf_config, model.config, str(path))
    mapped, dropped, unknown = _map_keys(state_dict)
    own = model.state_dict()
    unknown += [k for k in mapped if k not in own]
    mapped = {k: v for k, v in mapped.items() if k in own}
    wrong_shape = [k for k, v in mapped.items() if v.shape != own[k].shape]
    classifier = [k for k in wrong_shape if k.startswith("decoder.classifier.")]
    wrong_shape = [k for k in wrong_shape if k not in classifier]
    if unknown or wrong_shape:
        hint = _architecture_hint(mapped, model.config)
        parts = []
        if unknown:
            parts.append(f"{len(unknown)} unknown key(s): {_listing(unknown)}")
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} key(s) of the wrong shape: "
                         + _listing([f"{k} {tuple(mapped[k].shape)} vs {tuple(own[k].shape)}" for k in wrong_shape]))
        raise SeglabError(f"{path} does not fit this SegFormer{hint}: " + "; ".join(parts))
    missing = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    encoder_only = not any(k.startswith("decoder.") for k in mapped)
    if encoder_only:
        missing = [k for k in missing if not k.startswith("decoder.")]
    if missing:
        raise SeglabError(f"{path} lacks {len(missing)} key(s) this SegFormer needs: {_listing(missing)}")
    if dropped:
        logger.info("%s: dropped the image-classification head (%s)", path, ", ".join(dropped))
    if encoder_only:
        logger.info("%s holds an encoder only: the decoder starts from a fresh initialisation", path)
    if classifier:
        theirs = mapped[classifier[0]].shape[0]
        warnings.warn(
            f"{path}: the checkpoint's classifier has {theirs} classes, the model {model.config.num_classes}; "
            "the classifier is re-initialised",
            stacklevel=2,
        )
        for k in classifier:
            del mapped[k]
    with torch.no_grad():
        model.load_state_dict(mapped, strict=False)
        if classifier:
            model.reset_classifier()


__all__ = [
    "VARIANTS",
    "AllMLPDecoder",
    "MixTransformer",
    "Segformer",
    "SegformerConfig",
    "build_segformer",
    "hf_state_dict_to_seglab",
    "load_hf_weights",
    "read_hf_checkpoint",
]
