"""The article's Vision Transformer for segmentation (Matani & Singh, Part 4), and its variants.

BatchNorm2d on the raw image -> 16x16 patches (unfold order) -> Linear embedding -> + learned position
embedding -> pre-LayerNorm encoder blocks -> Linear to patch*patch*C -> patches folded back to an image.
At the defaults it has 86,284,806 parameters (the article: 86.28M).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MLP, SelfAttention, pad_to_multiple

HEADS = ("linear", "mlp", "upsample")


@dataclass
class VisionTransformerArgs:
    """The article's configuration, with its names and defaults; `head` and `mlp_ratio` are seglab's variants."""

    image_size: int = 128
    patch_size: int = 16
    in_channels: int = 3
    out_channels: int = 3
    embed_size: int = 768
    num_blocks: int = 12
    num_heads: int = 8
    dropout: float = 0.2
    mlp_ratio: int = 4
    head: str = "linear"  # "linear" (the article's), "mlp", or "upsample" (learned transposed-conv upsampling)

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size != 0:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        if self.embed_size % self.num_heads != 0:
            raise ValueError(f"embed_size {self.embed_size} is not divisible by num_heads {self.num_heads}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, not {self.head!r}")
        if self.head == "upsample" and self.patch_size & (self.patch_size - 1):
            raise ValueError(f"head 'upsample' needs a power-of-two patch_size, not {self.patch_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")


class ImageToPatches(nn.Module):
    """(B, C, H, W) -> (B, T, C*p*p), T = (H/p)*(W/p); the order of nn.Unfold (channel-major inside a patch)."""

    def __init__(self, patch_size: int):
        super().__init__()
        self.patch_size = patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        p = self.patch_size
        x = x.view(B, C, H // p, p, W // p, p)  # (B, C, gh, p, gw, p)
        x = x.permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, p, p)
        return x.reshape(B, (H // p) * (W // p), C * p * p)  # (B, T, C*p*p)


class PatchesToImage(nn.Module):
    """(B, T, C*p*p) -> (B, C, H, W); the inverse of ImageToPatches (nn.Fold with stride = kernel)."""

    def __init__(self, patch_size: int, channels: int):
        super().__init__()
        self.patch_size = patch_size
        self.channels = channels

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        B = x.shape[0]
        p, C = self.patch_size, self.channels
        gh, gw = size[0] // p, size[1] // p
        x = x.view(B, gh, gw, C, p, p)  # (B, gh, gw, C, p, p)
        x = x.permute(0, 3, 1, 4, 2, 5)  # (B, C, gh, p, gw, p)
        return x.reshape(B, C, gh * p, gw * p)  # (B, C, H, W)


class PositionEmbedding(nn.Module):
    """A learned position embedding (1, T, C) added to the tokens, bicubically resized to the actual grid.

    Resizing to the trained grid is an exact identity (bicubic, align_corners=False, scale 1 samples every source
    point with weight 1), so eager code skips it there and uses the parameter itself; a traced, compiled or
    exported model (ONNX) always resizes, so that its one graph serves every size."""

    def __init__(self, grid: int, embed_size: int):
        super().__init__()
        self.grid = grid
        self.weight = nn.Parameter(torch.randn(1, grid * grid, embed_size))  # the article initialises with randn

    def forward(self, x: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        return x + self.resized(grid_hw)

    def resized(self, grid_hw: tuple[int, int]) -> torch.Tensor:
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()) and tuple(grid_hw) == (self.grid, self.grid):
            return self.weight
        C = self.weight.shape[-1]
        w = self.weight.view(1, self.grid, self.grid, C).permute(0, 3, 1, 2)  # (1, C, g, g)
        w = F.interpolate(w, size=grid_hw, mode="bicubic", align_corners=False)  # (1, C, gh, gw)
        return w.flatten(2).transpose(1, 2)  # (1, gh*gw, C)


class EncoderBlock(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x)) (the article's
    SelfAttentionEncoderBlock)."""

    def __init__(self, embed_size: int, num_heads: int, dropout: float, mlp_ratio: int = 4):
        super().__init__()
        self.ln1 = nn.LayerNorm(embed_size)
        self.attn = SelfAttention(embed_size, num_heads, attn_dropout=dropout)
        self.ln2 = nn.LayerNorm(embed_size)
        self.mlp = MLP(embed_size, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class UpsampleHead(nn.Module):
    """Learned upsampling: token grid (B, C, gh, gw) -> log2(p) x [ConvTranspose 2x, BN, GELU] -> 1x1 conv to
    classes."""

    def __init__(self, embed_size: int, patch_size: int, out_channels: int, hidden: int = 64):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(embed_size, hidden, 1)]
        for _ in range(int(math.log2(patch_size))):
            layers += [nn.ConvTranspose2d(hidden, hidden, 2, stride=2), nn.BatchNorm2d(hidden), nn.GELU()]
        layers.append(nn.Conv2d(hidden, out_channels, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        B, T, C = x.shape
        x = x.transpose(1, 2).reshape(B, C, *grid_hw)  # (B, C, gh, gw)
        return self.net(x)  # (B, out, H, W)


class VisionTransformerForSegmentation(nn.Module):
    """The article's ViT for segmentation: images (B, in, H, W) in [0, 1] -> logits (B, out, H, W).

    Any H and W work: the normalised image is zero-padded at the bottom and right to a multiple of patch_size,
    the position embedding is resized to the patch grid, and the logits are cropped back to H x W. (No Python
    branch on the input's shape: the same graph serves every size when traced or exported.)
    """

    def __init__(self, args: VisionTransformerArgs):
        super().__init__()
        self.args = args
        p, C = args.patch_size, args.embed_size
        self.norm_in = nn.BatchNorm2d(args.in_channels)
        self.to_patches = ImageToPatches(p)
        self.patch_embed = nn.Linear(args.in_channels * p * p, C)
        self.pos_embed = PositionEmbedding(args.image_size // p, C)
        self.blocks = nn.ModuleList(
            EncoderBlock(C, args.num_heads, args.dropout, args.mlp_ratio) for _ in range(args.num_blocks)
        )
        if args.head == "linear":
            self.head = nn.Linear(C, p * p * args.out_channels)
        elif args.head == "mlp":
            self.head = nn.Sequential(nn.Linear(C, C), nn.GELU(), nn.Linear(C, p * p * args.out_channels))
        else:
            self.head = UpsampleHead(C, p, args.out_channels)
        self.to_image = PatchesToImage(p, args.out_channels)

    def _tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Images (B, in, H, W) -> embedded tokens (B, T, C) of the padded image's patch grid (gh, gw)."""
        p = self.args.patch_size
        x = self.norm_in(x)  # (B, in, H, W); padded after, so BatchNorm's statistics see only real pixels
        x = pad_to_multiple(x, p)  # (B, in, Hp, Wp), multiples of p (a zero pad when they are)
        grid_hw = (x.shape[-2] // p, x.shape[-1] // p)
        x = self.to_patches(x)  # (B, T, in*p*p)
        x = self.patch_embed(x)  # (B, T, C)
        return self.pos_embed(x, grid_hw), grid_hw  # (B, T, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        p = self.args.patch_size
        x, grid_hw = self._tokens(x)  # (B, T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        if isinstance(self.head, UpsampleHead):
            x = self.head(x, grid_hw)  # (B, out, Hp, Wp)
        else:
            x = self.head(x)  # (B, T, p*p*out)
            x = self.to_image(x, (grid_hw[0] * p, grid_hw[1] * p))  # (B, out, Hp, Wp)
        return x[..., :H, :W]  # (B, out, H, W)

    def attention_maps(self, x: torch.Tensor, blocks: list[int] | None = None) -> dict[int, torch.Tensor]:
        """Attention weights {block index: (B, heads, T, T)} for images x, for the chosen blocks (default all)."""
        wanted = set(range(len(self.blocks)) if blocks is None else blocks)
        maps: dict[int, torch.Tensor] = {}
        t, _ = self._tokens(x)
        for i, block in enumerate(self.blocks):
            if i in wanted:
                maps[i] = block.attn.attention_map(block.ln1(t))
            t = block(t)
        return maps
