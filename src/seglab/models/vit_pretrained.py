"""The article's ViT for segmentation on a pretrained backbone: `vit-b16`, loading HF ViTModel checkpoints.

What changes from the article's model (vit.py), so that google/vit-base-patch16-224-in21k's weights fit:
12 heads (not 8); the input is normalised with fixed statistics (the checkpoint's preprocessing: mean = std = 0.5
for Google's ViT, or ImageNet's) instead of the learned input BatchNorm; the class token and its position
embedding run through the encoder as in pretraining (the patch tokens' outputs depend on it), but the
segmentation path drops it: only the patch tokens reach the head; LayerNorm eps 1e-12 and a final LayerNorm,
as HF's ViT. The head is the article's: Linear to patch*patch*classes, patches folded back into an image.

Position embeddings are resized to the image's patch grid exactly as HF's `interpolate_pos_encoding` does:
the patch part bicubically (align_corners=False) from the square pretraining grid, the class token's kept.
Any input size works: images are padded at the bottom/right to a multiple of the patch size (always, by zero
when already a multiple) and the logits cropped back.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SeglabError, check_known
from .layers import pad_to_multiple
from .state_dict import listing, load_state_dict_checked, read_state_dict
from .vit import EncoderBlock, ImageToPatches, PatchesToImage

NORMALIZATIONS = {"inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # Google's ViT checkpoints
                  "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


@dataclass
class PretrainedViTArgs:
    """A ViT-B/16 by default (google/vit-base-patch16-224-in21k's shape)."""

    image_size: int = 128  # the training size (the position embeddings are stored at pretrain_size)
    pretrain_size: int = 224
    patch_size: int = 16
    out_channels: int = 3
    embed_size: int = 768
    num_blocks: int = 12
    num_heads: int = 12
    mlp_ratio: int = 4
    dropout: float = 0.0
    layer_norm_eps: float = 1e-12
    normalize: str = "inception"  # "inception" (mean = std = 0.5) or "imagenet"

    def __post_init__(self) -> None:
        if self.embed_size % self.num_heads:
            raise ValueError(f"embed_size {self.embed_size} is not divisible by num_heads {self.num_heads}")
        if self.pretrain_size % self.patch_size:
            raise ValueError(f"pretrain_size {self.pretrain_size} is not a multiple of patch_size {self.patch_size}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {tuple(NORMALIZATIONS)}, not {self.normalize!r}")


class PretrainedViTEncoder(nn.Module):
    """Images (B, 3, H, W) in [0, 1], H and W multiples of the patch size -> patch tokens (B, T, C) after the
    final LayerNorm (HF ViTModel's last_hidden_state[:, 1:])."""

    def __init__(self, args: PretrainedViTArgs):
        super().__init__()
        self.args = args
        p, C = args.patch_size, args.embed_size
        mean, std = NORMALIZATIONS[args.normalize]
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.to_patches = ImageToPatches(p)
        self.patch_embed = nn.Linear(3 * p * p, C)  # = HF's Conv2d(k=p, s=p), weight flattened (channel-major)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.grid = args.pretrain_size // p
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.grid * self.grid, C) * 0.02)  # class token first
        self.blocks = nn.ModuleList(
            EncoderBlock(C, args.num_heads, args.dropout, args.mlp_ratio) for _ in range(args.num_blocks)
        )
        self.norm = nn.LayerNorm(C, eps=args.layer_norm_eps)
        for block in self.blocks:  # vit.py's blocks use PyTorch's default eps; HF's ViT was trained with 1e-12
            block.ln1.eps = block.ln2.eps = args.layer_norm_eps

    def position_embedding(self, gh: int, gw: int) -> torch.Tensor:
        """(1, 1 + gh*gw, C): HF's interpolate_pos_encoding. Always run, with no branch on the size (a traced or
        exported graph stays right for every size): at the pretraining grid, bicubic resampling returns the
        embedding unchanged (every sample falls on a grid point)."""
        C = self.pos_embed.shape[-1]
        patch = self.pos_embed[:, 1:].reshape(1, self.grid, self.grid, C).permute(0, 3, 1, 2)  # (1, C, g, g)
        patch = F.interpolate(patch, size=(gh, gw), mode="bicubic", align_corners=False)  # (1, C, gh, gw)
        return torch.cat([self.pos_embed[:, :1], patch.permute(0, 2, 3, 1).reshape(1, gh * gw, C)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        p = self.args.patch_size
        x = (x - self.pixel_mean) / self.pixel_std
        t = self.patch_embed(self.to_patches(x))  # (B, T, C)
        t = torch.cat([self.cls_token.expand(B, -1, -1), t], dim=1)  # (B, 1+T, C)
        t = t + self.position_embedding(H // p, W // p)
        for block in self.blocks:
            t = block(t)  # (B, 1+T, C)
        return self.norm(t)[:, 1:]  # (B, T, C): the class token leaves the segmentation path here


class PretrainedViTForSegmentation(nn.Module):
    """vit-b16: images (B, 3, H, W) in [0, 1], any size -> logits (B, classes, H, W)."""

    def __init__(self, args: PretrainedViTArgs):
        super().__init__()
        self.args = args
        p = args.patch_size
        self.encoder = PretrainedViTEncoder(args)
        self.head = nn.Linear(args.embed_size, p * p * args.out_channels)
        self.to_image = PatchesToImage(p, args.out_channels)
        nn.init.normal_(self.head.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        p = self.args.patch_size
        x = pad_to_multiple(x, p, value=0.5)  # (B, 3, Hp, Wp); always, for traced graphs
        t = self.encoder(x)  # (B, T, C)
        logits = self.to_image(self.head(t), x.shape[-2:])  # (B, classes, Hp, Wp)
        return logits[..., :H, :W]

    @torch.no_grad()
    def reset_classifier(self) -> None:
        nn.init.normal_(self.head.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.bias)


# ---------------------------------------------------------------------------------------------------------------
# HF ViT -> seglab. Files (save_pretrained, any transformers version) hold 4.x names:
#   [vit.]embeddings.cls_token | position_embeddings | patch_embeddings.projection.{weight,bias}
#   [vit.]encoder.layer.{i}.attention.attention.query|key|value, .attention.output.dense, .intermediate.dense,
#   .output.dense, .layernorm_before, .layernorm_after; [vit.]layernorm; pooler.dense (dropped)
# transformers 5.x in memory: [vit.]layers.{i}.attention.q_proj|k_proj|v_proj|o_proj, .mlp.fc1|fc2, ...

_LAYER = {"attention.attention.query": "q", "attention.q_proj": "q", "attention.attention.key": "k",
          "attention.k_proj": "k", "attention.attention.value": "v", "attention.v_proj": "v",
          "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
          "intermediate.dense": "mlp.fc1", "mlp.fc1": "mlp.fc1", "output.dense": "mlp.fc2", "mlp.fc2": "mlp.fc2",
          "layernorm_before": "ln1", "layernorm_after": "ln2"}
_LAYER_KEY = re.compile(r"(?:vit\.)?(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)")
_DROPPED = re.compile(r"(?:vit\.)?pooler\..*|classifier\..*")  # ViTModel's pooler, an image classifier


def hf_vit_to_seglab(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an HF ViTModel / ViTForImageClassification state dict to PretrainedViTEncoder's names.

    q, k and v are concatenated into the fused qkv projection; the patch Conv2d becomes the Linear over
    channel-major patches; the pooler and any image classifier are dropped. Unknown keys raise SeglabError.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in state_dict.items():
        k = key.removeprefix("vit.")
        m = _LAYER_KEY.fullmatch(key)
        if m and m.group(2) in _LAYER:
            i, name, kind = int(m.group(1)), _LAYER[m.group(2)], m.group(3)
            if name in ("q", "k", "v"):
                qkv.setdefault((i, kind), {})[name] = value
            else:
                out[f"blocks.{i}.{name}.{kind}"] = value
        elif k == "embeddings.cls_token":
            out["cls_token"] = value
        elif k == "embeddings.position_embeddings":
            out["pos_embed"] = value
        elif k == "embeddings.patch_embeddings.projection.weight":
            out["patch_embed.weight"] = value.flatten(1)  # (C, 3, p, p) -> (C, 3*p*p), channel-major
        elif k == "embeddings.patch_embeddings.projection.bias":
            out["patch_embed.bias"] = value
        elif k in ("layernorm.weight", "layernorm.bias"):
            out[f"norm.{k.split('.')[1]}"] = value
        elif not _DROPPED.fullmatch(key):
            unknown.append(key)
    for (i, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            unknown.append(f"layer {i} attention {kind}: has {sorted(parts)} of q, k, v")
            continue
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    if unknown:
        raise SeglabError(f"{len(unknown)} key(s) are not HF ViT weights: {listing(unknown, 12)}")
    return out


def load_hf_vit_weights(model: PretrainedViTForSegmentation, source: str | os.PathLike[str]) -> None:
    """Load HF ViT weights (a file, a checkpoint folder, or "hf:owner/repo") into the model's encoder."""
    from .weights import resolve_weights

    path = resolve_weights(source)
    if path.is_dir():
        found = [path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()]
        if not found:
            raise SeglabError(f"{path} holds neither model.safetensors nor pytorch_model.bin")
        path = found[0]
    state = hf_vit_to_seglab(read_state_dict(path))
    load_state_dict_checked(model.encoder, state, str(path), missing_counters=True)


def build_pretrained_vit(num_classes: int = 3, image_size: int = 128, encoder_weights: str | None = None,
                         **overrides: object) -> PretrainedViTForSegmentation:
    """vit-b16 (or another shape via overrides), with HF ViT weights from encoder_weights when given."""
    settable = {f.name for f in fields(PretrainedViTArgs)} - {"image_size", "out_channels"}
    check_known(overrides, settable | {"encoder_weights"}, " for vit-b16")
    try:
        args = PretrainedViTArgs(image_size=image_size, out_channels=num_classes, **overrides)  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        raise SeglabError(f"invalid vit-b16 options: {e}") from None
    model = PretrainedViTForSegmentation(args)
    if encoder_weights is not None and not model.head.weight.is_meta:
        load_hf_vit_weights(model, encoder_weights)
    return model


__all__ = ["PretrainedViTArgs", "PretrainedViTEncoder", "PretrainedViTForSegmentation", "build_pretrained_vit",
           "hf_vit_to_seglab", "load_hf_vit_weights"]
