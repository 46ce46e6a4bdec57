"""SegFormer (Xie et al. 2021) from scratch: a Mix Transformer (MiT) encoder and an all-MLP decoder.

Encoder: 4 stages, each an overlapping patch embedding (strided conv + LayerNorm), transformer blocks with
efficient self-attention (keys and values shortened by a strided "sequence reduction" conv + LayerNorm) and a
Mix-FFN (Linear -> 3x3 depthwise conv -> GELU -> Linear), then a LayerNorm. No position embeddings: the
depthwise conv and the zero-padded overlapping convs carry position. Decoder: each stage's features -> Linear to
one width -> bilinear upsample to H/4 -> concat (deepest stage first, as HF) -> 1x1 conv (no bias) + BatchNorm +
ReLU -> dropout -> 1x1 classifier; the H/4 logits are upsampled bilinearly to the input size.

Any input size works: every input is padded at the bottom and right up to a multiple of
`SegformerConfig.pad_multiple` (32 for every preset) by reflection (replication where the image is too small to
reflect), run, and the logits are cropped back. Inputs that are multiples of 32 get a pad of zero, so results
equal HF transformers' SegformerForSemanticSegmentation (followed by a bilinear upsample of its H/4 logits).

Parameter counts equal HF's for the same config (B0 with 3 classes: 3,714,915). segformer_hf.py builds a preset and
loads HF checkpoints offline, in the key names of transformers 4.x and 5.x (`build_segformer(..., weights=path)`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SeglabError, check_known
from .layers import DropPath, pad_to_multiple

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
        return variant_of(self.hidden_sizes, self.depths, self.decoder_hidden_size)

    @classmethod
    def from_variant(cls, variant: str, num_classes: int = 3, **overrides: Any) -> SegformerConfig:
        """The preset for "b0" .. "b5" (or "segformer-b0" ..), with fields changed by overrides."""
        key = variant.lower().removeprefix("segformer-").removeprefix("mit-")
        if key not in VARIANTS:
            raise SeglabError(f"unknown SegFormer variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
        check_known(overrides, (f.name for f in fields(cls)), " for a SegFormer")
        try:
            return cls(**{**VARIANTS[key], "num_classes": num_classes, **overrides})
        except (TypeError, ValueError) as e:
            raise SeglabError(f"invalid SegFormer options: {e}") from None


def variant_of(hidden_sizes: Iterable[int], depths: Iterable[int], decoder_hidden_size: int | None) -> str | None:
    """The preset ("b0" .. "b5") with these encoder widths and depths (and decoder width, unless None), or None."""
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
    """Per-stage Linear to one width D -> upsample to H/4 -> concat -> 1x1 conv + BN + ReLU -> dropout -> 1x1
    classifier (`forward` computes it fused; `forward_concat` as written)."""

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
        # multiply-adds and no concatenation: 1.90x the training images/s of SegFormer-B0 at 128x128 on a CPU, one
        # thread (benchmarks/results/speedups-cpu-1thread.md, segformer-decoder; forward_concat is the "before").
        size = features[0].shape[-2:]
        n, D = len(features), self.fuse.out_channels
        fuse = self.fuse.weight.flatten(1)  # (D, n*D): input blocks deepest stage first (HF's concat order)
        x = None
        for i, (feature, linear) in enumerate(zip(features, self.linear)):
            w_i = fuse[:, (n - 1 - i) * D:(n - i) * D]  # (D, D)
            y = F.conv2d(feature, (w_i @ linear.weight)[:, :, None, None], w_i @ linear.bias)  # (B, D, h, w)
            if i > 0:  # stages 1.. are coarser than stage 0's H/4
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)  # (B, D, H/4, W/4)
            x = y if x is None else x + y
        return self.classifier(self.drop(self.act(self.bn(x))))  # (B, classes, H/4, W/4)

    def forward_concat(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The plain all-MLP decoder, as the paper and HF write it: the reference `forward` is tested equal to.

        Each stage's Linear to D at its own resolution -> bilinear upsample to H/4 -> concat (deepest stage first)
        -> the 1x1 fuse conv -> BN, ReLU, dropout -> classifier.
        """
        size = features[0].shape[-2:]
        ys = []
        for i, (feature, linear) in enumerate(zip(features, self.linear)):
            y = linear(feature.flatten(2).transpose(1, 2))  # (B, h*w, D)
            y = y.transpose(1, 2).reshape(y.shape[0], -1, *feature.shape[-2:])  # (B, D, h, w)
            if i > 0:  # stages 1.. are coarser than stage 0's H/4
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)  # (B, D, H/4, W/4)
            ys.append(y)
        x = self.fuse(torch.cat(ys[::-1], dim=1))  # (B, n*D, H/4, W/4) -> (B, D, H/4, W/4)
        return self.classifier(self.drop(self.act(self.bn(x))))  # (B, classes, H/4, W/4)


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
        mode = "constant" if self.config.pad_mode == "zeros" else self.config.pad_mode
        return pad_to_multiple(x, self.config.pad_multiple, mode)  # (B, 3, Hp, Wp); reflect: replicate under 32 px

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        x = self._prepare(x)  # (B, 3, Hp, Wp), multiples of 32
        features = self.encoder(x)  # 4 x (B, C_i, Hp/2^(i+2), Wp/2^(i+2))
        logits = self.decoder(features)  # (B, classes, Hp/4, Wp/4)
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)  # (B, classes, Hp, Wp)
        return logits[..., :H, :W].contiguous()  # (B, classes, H, W)

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


__all__ = [
    "VARIANTS",
    "AllMLPDecoder",
    "MixTransformer",
    "Segformer",
    "SegformerConfig",
    "variant_of",
]
