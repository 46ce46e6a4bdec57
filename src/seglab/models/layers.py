"""Blocks shared by models: self-attention on F.scaled_dot_product_attention, MLP, DropPath, and padding inputs
to a multiple of a model's stride."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameters, run by F.scaled_dot_product_attention.

    qkv holds nn.MultiheadAttention's in_proj (weight (3C, C), bias 3C) and proj its out_proj, so weights copy
    across one to one. attn_dropout drops attention weights in training, as nn.MultiheadAttention's dropout does.
    """

    def __init__(self, dim: int, num_heads: int, attn_dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embed size {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, h, T, d)
        dropout_p = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (B, h, T, d)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.proj(y)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights (B, h, T, T) for x (B, T, C), computed explicitly (for figures, not training)."""
        B, T, C = x.shape
        q, k, _ = self.qkv(x).view(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return torch.softmax(q @ k.transpose(-2, -1) * self.head_dim**-0.5, dim=-1)

    @torch.no_grad()
    def load_from_multihead_attention(self, mha: nn.MultiheadAttention) -> None:
        """Copy the weights of an nn.MultiheadAttention (batch_first or not) into this module."""
        self.qkv.weight.copy_(mha.in_proj_weight)
        self.qkv.bias.copy_(mha.in_proj_bias)
        self.proj.weight.copy_(mha.out_proj.weight)
        self.proj.bias.copy_(mha.out_proj.bias)


class MLP(nn.Module):
    """Linear(C, hC) -> GELU -> Linear(hC, C) -> Dropout: the article's MultiLayerPerceptron."""

    def __init__(self, dim: int, hidden_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim * hidden_ratio)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim * hidden_ratio, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability p in training, rescale the rest."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "constant", value: float = 0.0) -> torch.Tensor:
    """Pad images (..., H, W) at the bottom and right up to multiples of `multiple` (crop results back with
    [..., :H, :W]). Always padded, by nothing when the sides are multiples already: no Python branch on the
    size, so a traced or exported graph serves every size. mode: "constant" (by `value`), "reflect" or
    "replicate", as F.pad; "reflect" turns "replicate" where a pad is not smaller than its side (reflection
    needs that: images smaller than `multiple`)."""
    H, W = x.shape[-2:]
    pad = (0, (-W) % multiple, 0, (-H) % multiple)  # F.pad order: left, right, top, bottom
    if mode == "reflect" and (pad[1] >= W or pad[3] >= H):
        mode = "replicate"
    if mode == "constant":
        return F.pad(x, pad, value=value)
    return F.pad(x, pad, mode=mode)
