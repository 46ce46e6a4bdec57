"""Atomic checkpoints in safetensors: weights, and for resuming the optimizer, scheduler and RNG state.

One file holds everything a checkpoint needs, so one rename makes it appear whole: model tensors under their
own names, optimizer tensors under "__optim__/...", RNG states under "__rng__/...", and a JSON header
("seglab" metadata) with the model spec, epoch, metrics, optimizer hyper-parameters and scheduler state.
Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from .atomic import atomic_write
from .errors import SeglabError, check_file
from .models.state_dict import load_state_dict_checked

_OPTIM = "__optim__/"
_RNG = "__rng__/"
_TRAIN = "__train__/"  # what only resuming needs: with --ema, the live weights (the model's are the average's)
FORMAT = "seglab-checkpoint-1"
CHECKPOINTS_DIR = "checkpoints"  # a run directory's folder of checkpoints (run.py describes the rest of it)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    rng: dict[str, torch.Tensor] | None = None,
    train: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write a checkpoint atomically. meta must hold the model spec ("model": build_model's seglab_spec); `train`
    holds tensors only a resumed run reads back (train_state)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    header = dict(meta, format=FORMAT)
    if optimizer is not None:
        sd = optimizer.state_dict()
        for pid, state in sd["state"].items():
            for name, value in state.items():
                if torch.is_tensor(value):
                    tensors[f"{_OPTIM}{pid}/{name}"] = value.detach().contiguous().cpu()
                else:
                    header.setdefault("optim_scalars", {})[f"{pid}/{name}"] = value
        header["optim_param_groups"] = sd["param_groups"]
    if scheduler is not None:
        header["scheduler"] = {k: v for k, v in scheduler.state_dict().items() if not callable(v)}
    for name, value in (rng or {}).items():
        tensors[f"{_RNG}{name}"] = value.contiguous().cpu()
    for name, value in (train or {}).items():
        tensors[f"{_TRAIN}{name}"] = value.detach().contiguous().cpu()
    header["crc32"] = _checksum(tensors)
    metadata = {"seglab": json.dumps(header)}
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _checksum(tensors: dict[str, torch.Tensor]) -> int:
    """CRC32 over every tensor's name, shape, dtype and bytes, in name order: flipped bits in the data show up."""
    crc = 0
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        crc = zlib.crc32(f"{key}:{tuple(t.shape)}:{t.dtype};".encode(), crc)
        if t.numel():
            crc = zlib.crc32(t.reshape(-1).view(torch.uint8).numpy().data, crc)  # no copy of the bytes
    return crc


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a seglab checkpoint: (all tensors, header). Raises SeglabError for a missing, corrupt or foreign file."""
    path = Path(path)
    if path.is_dir():
        path = find_checkpoint(path)
    check_file(path, "checkpoint")
    try:
        # safetensors parses a header and copies raw tensor bytes: nothing in the file is ever executed.
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError, MemoryError) as e:
        raise SeglabError(
            f"not a readable safetensors checkpoint ({type(e).__name__}: {e}): {path}. It may be corrupt or "
            "truncated, or another format (seglab reads only .safetensors checkpoints it wrote)."
        ) from None
    if "seglab" not in metadata:
        raise SeglabError(f"not a seglab checkpoint (a safetensors file without seglab's header): {path}. "
                          "HF Segformer weights go to `seglab train --init-from`.")
    try:
        header = json.loads(metadata["seglab"])
    except json.JSONDecodeError:
        header = None
    problem = _header_problem(header)
    if problem:
        raise SeglabError(f"checkpoint header is damaged ({problem}): {path}")
    if "crc32" in header and header["crc32"] != _checksum(tensors):
        raise SeglabError(f"checkpoint data is damaged (its CRC32 does not match what was saved): {path}. "
                          "Use another checkpoint (e.g. best.safetensors or an earlier copy).")
    return tensors, header


def _header_problem(header: Any) -> str | None:
    """What is wrong with a checkpoint's seglab header, or None."""
    if not isinstance(header, dict):
        return "not a JSON object"
    spec = header.get("model")
    if not isinstance(spec, dict):
        return "no model spec"
    for key, kind in (("name", str), ("num_classes", int), ("image_size", int)):
        if not isinstance(spec.get(key), kind) or isinstance(spec.get(key), bool):
            return f"model.{key} is missing or not a {kind.__name__}"
    if not isinstance(spec.get("overrides", {}), dict):
        return "model.overrides is not a mapping"
    if "image_size" in header and (not isinstance(header["image_size"], int) or header["image_size"] < 1):
        return "image_size is not a positive integer"
    if "interpolation" in header:
        from .data.io import INTERPOLATIONS

        if header["interpolation"] not in INTERPOLATIONS:
            return f"unknown interpolation {header['interpolation']!r}"
    return None


def checkpoint_path(run_dir: str | Path, which: str) -> Path:
    """Where a run directory keeps its `which` checkpoint (last or best): checkpoints/{which}.safetensors."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"{which}.safetensors"


def find_checkpoint(run_dir: str | Path, which: str = "best") -> Path:
    """The checkpoint file of a run directory: checkpoints/{which}.safetensors, else last."""
    run_dir = Path(run_dir)
    for name in (which, "last"):
        p = checkpoint_path(run_dir, name)
        if p.exists():
            return p
    raise SeglabError(f"no checkpoint in {run_dir / CHECKPOINTS_DIR} (expected best.safetensors or last.safetensors)")


def model_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's own tensors of a checkpoint (no optimizer or RNG entries)."""
    return {k: v for k, v in tensors.items() if not k.startswith((_OPTIM, _RNG, _TRAIN))}


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], path: str | Path = "checkpoint") -> None:
    """Load model tensors strictly; a mismatch names the missing, unknown and wrongly shaped keys."""
    load_state_dict_checked(model, model_state(tensors), f"checkpoint {path}", what="the model")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint (or a run directory's best checkpoint) was saved from; returns (model, header)."""
    from .models import build_model

    tensors, header = read_checkpoint(path)
    spec = header["model"]
    try:
        model = build_model(spec["name"], num_classes=spec["num_classes"], image_size=spec["image_size"],
                            **spec.get("overrides", {}))
    except SeglabError as e:
        raise SeglabError(f"checkpoint {path} describes a model seglab cannot build: {e}") from None
    except Exception as e:  # noqa: BLE001 - a damaged header can hold any value
        raise SeglabError(
            f"checkpoint {path} describes a model seglab cannot build ({type(e).__name__}: {e})"
        ) from None
    load_weights(model, tensors, path)
    return model.to(device).eval(), header


def restore_optimizer(
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    header: dict[str, Any],
    path: str | Path = "checkpoint",
) -> None:
    """Put a checkpoint's optimizer state back into `optimizer` (same parameters, same order).

    Also checks that the header holds what a resume needs next (epoch, scheduler state).
    """
    if not (isinstance(header.get("optim_param_groups"), list) and isinstance(header.get("scheduler"), dict)
            and isinstance(header.get("epoch"), int)):
        raise SeglabError(
            f"{path} holds no optimizer and scheduler state to resume from (a weights-only checkpoint, such as a "
            f"copy of best.safetensors?). Put the run's own last.safetensors back, or start a new run from these "
            f"weights with --init-from {path}."
        )
    try:
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith(_OPTIM):
                pid, name = key[len(_OPTIM):].split("/", 1)
                state.setdefault(int(pid), {})[name] = value
        for key, value in header.get("optim_scalars", {}).items():
            pid, name = key.split("/", 1)
            state.setdefault(int(pid), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": header["optim_param_groups"]})
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as e:
        raise SeglabError(f"the optimizer state in {path} does not fit this run ({type(e).__name__}: {e}); "
                          "was the run's config.yaml changed?") from None


def train_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors saved with save_checkpoint(train=...), by their names."""
    return {k[len(_TRAIN):]: v for k, v in tensors.items() if k.startswith(_TRAIN)}


def rng_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(_RNG):]: v for k, v in tensors.items() if k.startswith(_RNG)}
