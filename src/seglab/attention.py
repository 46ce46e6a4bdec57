"""Where a patch attends (the article's Figure 3, for images): per head, for chosen blocks, over the image.

For `vit*` models ROW,COL index the patch grid (image_size / patch_size cells a side) and the map covers every
patch. For SegFormer ROW,COL index the grid of its last stage (32x32-pixel cells); in each chosen block the query
is the token under that cell's centre, and the map covers that block's reduced keys (sequence reduction), shown
stretched over the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import SeglabError
from .models.segformer import Segformer
from .models.vit import VisionTransformerForSegmentation


def _parse_blocks(text: str | None) -> list | None:
    if not text:
        return None
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            out.append(tuple(int(v) for v in part.split(".")) if "." in part else int(part))
        except ValueError:
            raise SeglabError(f"--blocks {text!r}: expected numbers like 0,5,11 (ViT) or 0.1,3.2 "
                              "(SegFormer stage.block)") from None
    return out


@torch.inference_mode()
def patch_attention(
    model: torch.nn.Module, x: torch.Tensor, patch: tuple[int, int], blocks: list | None = None
) -> dict[str, torch.Tensor]:
    """{block label: (heads, kh, kw)} attention of the query patch over the keys, for one image x (1, 3, H, W)."""
    H, W = x.shape[-2:]
    row, col = patch
    out: dict[str, torch.Tensor] = {}
    if isinstance(model, VisionTransformerForSegmentation):
        p = model.args.patch_size
        gh, gw = H // p, W // p
        if not (0 <= row < gh and 0 <= col < gw):
            raise SeglabError(f"--patch {row},{col} is outside the {gh}x{gw} patch grid of this model")
        n = len(model.blocks)
        chosen = blocks if blocks is not None else sorted({0, n // 2, n - 1})
        bad = [b for b in chosen if not isinstance(b, int) or not 0 <= b < n]
        if bad:
            raise SeglabError(f"--blocks: no block {bad} in this ViT (blocks 0..{n - 1})")
        maps = model.attention_maps(x, chosen)
        for b in chosen:
            out[f"block {b}"] = maps[b][0, :, row * gw + col].reshape(-1, gh, gw)  # (heads, gh, gw)
        return out
    if isinstance(model, Segformer):
        depths = model.config.depths
        chosen = blocks if blocks is not None else [(s, d - 1) for s, d in enumerate(depths)]
        if any(not isinstance(b, tuple) or len(b) != 2 for b in chosen):
            raise SeglabError("--blocks for SegFormer are stage.block pairs, e.g. 0.1,3.2")
        mult = model.config.pad_multiple
        Hp, Wp = -(-H // mult) * mult, -(-W // mult) * mult
        if not (0 <= row < -(-H // 32) and 0 <= col < -(-W // 32)):
            raise SeglabError(f"--patch {row},{col} is outside the {-(-H // 32)}x{-(-W // 32)} grid of 32-pixel cells")
        maps = model.attention_maps(x, chosen)
        for (s, b) in chosen:
            stride = 4 * 2**s
            h, w = -(-Hp // stride), -(-Wp // stride)
            sr = model.config.sr_ratios[s]
            kh, kw = (h // sr, w // sr) if sr > 1 else (h, w)
            qy, qx = int((row + 0.5) * 32) // stride, int((col + 0.5) * 32) // stride
            a = maps[(s, b)][0, :, qy * w + qx]  # (heads, M)
            out[f"stage {s} block {b}"] = a.reshape(-1, kh, kw)
        return out
    raise SeglabError(f"attention maps are available for vit* and segformer-* models, not {type(model).__name__}")


def attention_figure(
    image: Image.Image, maps: dict[str, torch.Tensor], patch_box: tuple[int, int, int, int], path: str | Path
) -> None:
    """Rows: blocks; columns: the image with the query patch marked, then one heat map per head."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as mpatches
    import matplotlib.pyplot as plt

    heads = max(m.shape[0] for m in maps.values())
    fig, axes = plt.subplots(len(maps), heads + 1, figsize=(1.8 * (heads + 1), 1.9 * len(maps)), squeeze=False)
    img = np.asarray(image)
    for r, (label, m) in enumerate(maps.items()):
        ax = axes[r, 0]
        ax.imshow(img)
        x0, y0, x1, y1 = patch_box
        ax.add_patch(mpatches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="red", linewidth=2))
        ax.set_title(label, fontsize=8)
        up = F.interpolate(m[None].float(), size=img.shape[:2], mode="nearest")[0].cpu().numpy()  # (heads, H, W)
        for h in range(heads):
            ax = axes[r, h + 1]
            ax.imshow(img)
            if h < up.shape[0]:
                ax.imshow(up[h], cmap="inferno", alpha=0.6)
                ax.set_title(f"head {h}", fontsize=8)
        for ax in axes[r]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def attention_for_checkpoint(
    checkpoint: str | Path, image_path: str | Path, patch: tuple[int, int], out: str | Path,
    blocks: str | None = None, device: str = "cpu",
) -> dict[str, torch.Tensor]:
    """Load a checkpoint, read an image at the model's size, and write the attention figure to `out`."""
    from .checkpoint import load_model
    from .data.io import INTERPOLATIONS, read_image

    model, header = load_model(checkpoint, device)
    size = int(header.get("image_size", header["model"]["image_size"]))
    image = read_image(image_path).resize((size, size), INTERPOLATIONS[header.get("interpolation", "nearest")])
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float().div(255).to(device)  # (1, 3, S, S)
    maps = patch_attention(model, x, patch, _parse_blocks(blocks))
    cell = model.args.patch_size if isinstance(model, VisionTransformerForSegmentation) else 32
    row, col = patch
    box = (col * cell, row * cell, min(size, (col + 1) * cell), min(size, (row + 1) * cell))
    attention_figure(image, maps, box, out)
    return maps
