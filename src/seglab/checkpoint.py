"""Atomic checkpoints in safetensors: weights, and for resuming the optimizer, scheduler and RNG state.

One file holds everything a checkpoint needs, so one rename makes it appear whole: model tensors under their
own names, optimizer tensors under "__optim__/...", RNG states under "__rng__/...", and a JSON header
("seglab" metadata) with the model spec, epoch, metrics, optimizer hyper-parameters and scheduler state.
Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from .errors import SeglabError

_OPTIM = "__optim__/"
_RNG = "__rng__/"
FORMAT = "seglab-checkpoint-1"


def atomic_write(path: Path, write: Any) -> None:
    """Call write(tmp_path) for a temporary file beside `path`, fsync it, then rename it over `path`.

    A process killed at any point leaves either the old file or the new one, never a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode a plain open() would
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        try:  # make the rename itself durable
            dfd = os.open(path.parent, os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)
        except OSError:
            pass
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno == 28:
            raise SeglabError(f"disk full while writing {path}; free some space and resume the run") from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    rng: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write a checkpoint atomically. meta must hold the model spec ("model": build_model's seglab_spec)."""
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
    metadata = {"seglab": json.dumps(header)}
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a seglab checkpoint: (all tensors, header). Raises SeglabError for a missing, corrupt or foreign file."""
    path = Path(path)
    if path.is_dir():
        path = find_checkpoint(path)
    if not path.exists():
        raise SeglabError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise SeglabError(f"not a readable safetensors checkpoint ({e}): {path}. It may be corrupt or truncated.") from None
    if "seglab" not in metadata:
        raise SeglabError(f"not a seglab checkpoint (no seglab header): {path}")
    try:
        header = json.loads(metadata["seglab"])
        header["model"]["name"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise SeglabError(f"checkpoint header is damaged: {path}") from None
    return tensors, header


def find_checkpoint(run_dir: str | Path, which: str = "best") -> Path:
    """The checkpoint file of a run directory: checkpoints/{which}.safetensors, else last."""
    run_dir = Path(run_dir)
    for name in (which, "last"):
        p = run_dir / "checkpoints" / f"{name}.safetensors"
        if p.exists():
            return p
    raise SeglabError(f"no checkpoint in {run_dir / 'checkpoints'} (expected best.safetensors or last.safetensors)")


def model_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's own tensors of a checkpoint (no optimizer or RNG entries)."""
    return {k: v for k, v in tensors.items() if not k.startswith((_OPTIM, _RNG))}


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], path: str | Path = "checkpoint") -> None:
    """Load model tensors strictly; a mismatch names the missing and unexpected keys."""
    state = model_state(tensors)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {', '.join(missing[:6])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {', '.join(unexpected[:6])}")
        if wrong:
            parts.append(f"shape mismatch for: {', '.join(wrong[:6])}")
        raise SeglabError(f"checkpoint {path} does not fit the model: " + "; ".join(parts))
    model.load_state_dict(state)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint (or a run directory's best checkpoint) was saved from; returns (model, header)."""
    from .models import build_model

    tensors, header = read_checkpoint(path)
    spec = header["model"]
    model = build_model(spec["name"], num_classes=spec["num_classes"], image_size=spec["image_size"],
                        **spec.get("overrides", {}))
    load_weights(model, tensors, path)
    return model.to(device).eval(), header


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> None:
    """Put a checkpoint's optimizer state back into `optimizer` (same parameters, same order)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(_OPTIM):
            pid, name = key[len(_OPTIM):].split("/", 1)
            state.setdefault(int(pid), {})[name] = value
    for key, value in header.get("optim_scalars", {}).items():
        pid, name = key.split("/", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": header["optim_param_groups"]})


def rng_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(_RNG):]: v for k, v in tensors.items() if k.startswith(_RNG)}
