"""Fine-tuning pretrained models: a lower learning rate for pretrained parameters, a frozen encoder, and the
weights a run starts from (--init-from).

A model's pretrained part is its `encoder` submodule (EfficientNet-Lite in the *-efficientnet-lite* models, the
ViT backbone in vit-b16, the MiT encoder in segformer-*); everything else (heads, decoders, classifiers) is new.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .checkpoint import load_weights, read_checkpoint
from .errors import SeglabError
from .models.segformer import Segformer
from .models.weights import HUB_PREFIX, hub_download


def encoder_of(model: nn.Module) -> nn.Module | None:
    """The model's pretrained part (its `encoder` submodule), or None when it has none."""
    encoder = getattr(model, "encoder", None)
    return encoder if isinstance(encoder, nn.Module) else None


def param_groups(model: nn.Module, lr: float, encoder_lr_ratio: float, weight_decay: float) -> list[dict]:
    """Optimizer groups: the encoder's parameters at lr * encoder_lr_ratio, the rest at lr. Norm weights and
    biases (1-D tensors) get no weight decay. Each group records its `lr_scale` so schedulers keep the ratio."""
    encoder = encoder_of(model)
    pretrained = {id(p) for p in encoder.parameters()} if encoder is not None else set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        groups.setdefault((id(p) in pretrained, p.ndim <= 1), []).append(p)
    out = []
    for (is_pretrained, no_decay), params in sorted(groups.items()):
        scale = encoder_lr_ratio if is_pretrained else 1.0
        out.append({"params": params, "lr": lr * scale, "lr_scale": scale,
                    "weight_decay": 0.0 if no_decay else weight_decay})
    return out


def set_encoder_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (no gradients, BatchNorm statistics fixed: eval mode) or unfreeze the model's encoder.

    Call it after every model.train(): train() puts the encoder's BatchNorms back into training mode.
    """
    encoder = encoder_of(model)
    if encoder is None:
        return
    for p in encoder.parameters():
        p.requires_grad_(not frozen)
    if frozen:
        encoder.eval()
    elif model.training:
        encoder.train()


def frozen_bn_layers(model: nn.Module) -> int:
    """How many BatchNorm layers are in eval mode inside a training model (for checks and logs)."""
    return sum(1 for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.training)


def load_init_from(model: nn.Module, path: str) -> None:
    """--init-from: load a seglab checkpoint's weights into model, or HF Segformer weights into a segformer-*;
    from a local path or the Hugging Face Hub (hf:owner/repo[/file][@revision], downloaded once and cached)."""
    if path.startswith(HUB_PREFIX):
        p = hub_download(path)
        if p.suffix != ".safetensors" or not _is_seglab_checkpoint(p):
            p = p.parent if (p.parent / "config.json").is_file() else p  # HF layout: the snapshot folder
    else:
        p = Path(path)
    if not p.exists():
        raise SeglabError(f"--init-from {path}: no such file or folder")
    why = ""
    if p.suffix == ".safetensors" or p.is_dir():
        try:
            tensors, header = read_checkpoint(p)
        except SeglabError as e:
            header, why = None, f" ({e})"
        if header is not None:
            load_weights(model, tensors, p)
            return
    if isinstance(model, Segformer):
        from .models.segformer_hf import load_hf_weights

        load_hf_weights(model, p)
        return
    raise SeglabError(f"--init-from {path}: not a seglab checkpoint{why}, and {model.__class__.__name__} imports no "
                      "other weights")


def _is_seglab_checkpoint(path: Path) -> bool:
    """Does this .safetensors file carry seglab's header (rather than HF's layout)?"""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return "seglab" in (f.metadata() or {})
    except Exception:  # noqa: BLE001 - unreadable: the loaders below say why, naming the file
        return False


__all__ = ["encoder_of", "frozen_bn_layers", "load_init_from", "param_groups", "set_encoder_frozen"]
