"""The naive reference: the article's code as its notebook writes it, for the benchmarks to beat.

- ``ArticleViT``: the authors' Vision Transformer for segmentation (Matani & Singh, Part 4) in their own
  style: nn.Unfold to cut patches, nn.MultiheadAttention(batch_first=True, dropout) in pre-LayerNorm blocks,
  nn.Fold to put the patches back. Same parameters as seglab's ``vit`` (86,284,806 at the defaults).
- ``PilSegmentationFolder``: per-sample data the notebook's way, on the CPU: decode the JPEG and the trimap
  PNG, resize both to the training size with NEAREST, flip both with p=0.5, ColorJitter(contrast=0.3) on the
  image (done with PIL.ImageEnhance.Contrast: torchvision is not a dependency), then to tensors; batched by a
  torch DataLoader. ``naive_train_step`` is the notebook's loop body: fp32, plain Adam, ``loss.item()`` every
  step.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch import nn

# ----------------------------------------------------------------------------------------------------------
# The article's model, written as the notebook writes it.


class ImageToPatches(nn.Module):
    def __init__(self, image_size: int, patch_size: int):
        super().__init__()
        self.image_size = image_size
        self.patch_size = patch_size
        self.unfold = nn.Unfold(kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert len(x.size()) == 4
        y = self.unfold(x)  # (B, C*p*p, T)
        return y.permute(0, 2, 1)  # (B, T, C*p*p)


class PatchEmbedding(nn.Module):
    def __init__(self, in_channels: int, embed_size: int):
        super().__init__()
        self.embed_layer = nn.Linear(in_features=in_channels, out_features=embed_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_layer(x)


class VisionTransformerInput(nn.Module):
    def __init__(self, image_size: int, patch_size: int, in_channels: int, embed_size: int):
        super().__init__()
        self.i2p = ImageToPatches(image_size, patch_size)
        self.pe = PatchEmbedding(patch_size * patch_size * in_channels, embed_size)
        num_patches = (image_size // patch_size) ** 2
        self.position_embed = nn.Parameter(torch.randn(num_patches, embed_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.i2p(x)
        x = self.pe(x)
        return x + self.position_embed


class MultiLayerPerceptron(nn.Module):
    def __init__(self, embed_size: int, dropout: float):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(embed_size, embed_size * 4),
            nn.GELU(),
            nn.Linear(embed_size * 4, embed_size),
            nn.Dropout(p=dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SelfAttentionEncoderBlock(nn.Module):
    def __init__(self, embed_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(embed_size)
        self.mha = nn.MultiheadAttention(embed_size, num_heads, dropout=dropout, batch_first=True)
        self.ln2 = nn.LayerNorm(embed_size)
        self.mlp = MultiLayerPerceptron(embed_size, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln1(x)
        x = x + self.mha(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class OutputProjection(nn.Module):
    def __init__(self, image_size: int, patch_size: int, embed_size: int, output_dims: int):
        super().__init__()
        self.projection = nn.Linear(embed_size, patch_size * patch_size * output_dims)
        self.fold = nn.Fold(output_size=(image_size, image_size), kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.projection(x)  # (B, T, p*p*C)
        x = x.permute(0, 2, 1)  # (B, p*p*C, T)
        return self.fold(x)  # (B, C, H, W)


class ArticleViT(nn.Module):
    """The article's VisionTransformerForSegmentation (defaults: 128, 16, 3, 3, 768, 12, 8, 0.2)."""

    def __init__(self, image_size: int = 128, patch_size: int = 16, in_channels: int = 3, out_channels: int = 3,
                 embed_size: int = 768, num_blocks: int = 12, num_heads: int = 8, dropout: float = 0.2):
        super().__init__()
        heads = [SelfAttentionEncoderBlock(embed_size, num_heads, dropout) for _ in range(num_blocks)]
        self.layers = nn.Sequential(
            nn.BatchNorm2d(num_features=in_channels),
            VisionTransformerInput(image_size, patch_size, in_channels, embed_size),
            nn.Sequential(*heads),
            OutputProjection(image_size, patch_size, embed_size, out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


# ----------------------------------------------------------------------------------------------------------
# The notebook's data path: per-sample decoding and PIL transforms in a DataLoader.


def write_jpeg_folder(folder: str | Path, count: int, size: int = 448, seed: int = 0, quality: int = 90) -> Path:
    """Write `count` synthetic pets once as images/<i>.jpg and trimaps/<i>.png (values class + 1, as
    Oxford-IIIT Pet's 1..3), so that the naive path decodes real files per sample. Returns the folder."""
    from seglab.data.synthetic import SyntheticSource

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "trimaps").mkdir(parents=True, exist_ok=True)
    source = SyntheticSource("train", count=count, size=size, seed=seed)
    for i in range(count):
        image, mask = source.load(i)
        image.save(folder / "images" / f"{i:05d}.jpg", quality=quality)
        Image.fromarray((mask + 1).astype(np.uint8)).save(folder / "trimaps" / f"{i:05d}.png")
    return folder


def folder_pairs(folder: str | Path) -> list[tuple[Path, Path]]:
    """(image, trimap) paths of a folder written by write_jpeg_folder, or of an Oxford-IIIT Pet root
    (images/*.jpg with annotations/trimaps/*.png)."""
    folder = Path(folder)
    trimaps = folder / "trimaps"
    if not trimaps.is_dir():
        trimaps = folder / "annotations" / "trimaps"
    pairs = []
    for image in sorted((folder / "images").glob("*.jpg")):
        trimap = trimaps / f"{image.stem}.png"
        if trimap.exists():
            pairs.append((image, trimap))
    if not pairs:
        raise FileNotFoundError(f"no images/*.jpg with trimaps in {folder}")
    return pairs


class PilSegmentationFolder(torch.utils.data.Dataset):
    """The notebook's per-sample transforms on the CPU: resize NEAREST, flip p=0.5, contrast 0.3, to tensors."""

    def __init__(self, pairs: list[tuple[Path, Path]], image_size: int = 128, hflip: float = 0.5,
                 contrast: float = 0.3):
        self.pairs = pairs
        self.size = (image_size, image_size)
        self.hflip = hflip
        self.contrast = contrast

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, trimap_path = self.pairs[i]
        image = Image.open(image_path).convert("RGB")
        trimap = Image.open(trimap_path)
        image = image.resize(self.size, Image.Resampling.NEAREST)
        trimap = trimap.resize(self.size, Image.Resampling.NEAREST)
        if random.random() < self.hflip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            trimap = trimap.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.contrast > 0:
            image = ImageEnhance.Contrast(image).enhance(random.uniform(1 - self.contrast, 1 + self.contrast))
        x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
        y = torch.from_numpy(np.asarray(trimap, dtype=np.uint8).astype(np.int64)) - 1  # 1..3 -> 0..2
        return x, y  # (3, H, W) float, (H, W) int64


def naive_loader(dataset: torch.utils.data.Dataset, batch_size: int, workers: int = 0,
                 seed: int = 0) -> torch.utils.data.DataLoader:
    """The notebook's DataLoader: shuffled, batch_size, default collation."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                       num_workers=workers, persistent_workers=workers > 0,
                                       generator=torch.Generator().manual_seed(seed))


def naive_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module,
                     inputs: torch.Tensor, targets: torch.Tensor, device: torch.device) -> float:
    """The notebook's train_model loop body: zero_grad, to device, forward, loss, backward, step, loss.item()."""
    optimizer.zero_grad()
    inputs = inputs.to(device)
    targets = targets.to(device)
    outputs = model(inputs)
    loss = criterion(outputs, targets)
    loss.backward()
    optimizer.step()
    return loss.item()


__all__ = ["ArticleViT", "PilSegmentationFolder", "folder_pairs", "naive_loader", "naive_train_step",
           "write_jpeg_folder"]
