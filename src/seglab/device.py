"""Where a model runs: the device (cuda, then mps, then cpu for "auto") and the autocast that goes with it."""

from __future__ import annotations

import torch

from .errors import SeglabError


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu for "auto"; a named device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SeglabError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    if name == "mps" and not _mps_available():
        raise SeglabError("--device mps: MPS is not available on this machine; use --device cpu or auto")
    return torch.device(name)


def autocast_for(device: torch.device, amp: str) -> torch.autocast:
    """bf16 autocast on CUDA when amp is auto, anywhere when bf16, never when off."""
    enabled = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


__all__ = ["autocast_for", "resolve_device"]
