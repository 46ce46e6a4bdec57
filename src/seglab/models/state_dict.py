"""State dicts: reading weights files safely, comparing keys, and the one checked loader every weight source uses.

read_state_dict reads .safetensors, torch state dicts (torch.load(weights_only=True): nothing unpickles but
tensors) and sharded checkpoints' index .json. load_state_dict_checked loads a state dict already in seglab's
names into a model, strictly: a missing, unknown or wrongly shaped key ends in one SeglabError naming them
(describe_keys). Checkpoints (checkpoint.py), converted pretrained weights (weights.py, vit_pretrained.py) and
HF SegFormer checkpoints (segformer_hf.py) all load through it.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import SeglabError


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, a torch state dict (.bin/.pt/.pth, read with weights_only=True) or a
    sharded checkpoint's index .json; every failure is one SeglabError naming the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SeglabError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        if suffix in (".bin", ".pt", ".pth"):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        elif suffix == ".json":  # a sharded checkpoint's index
            weight_map = json.loads(path.read_text())["weight_map"]
            loaded = {}
            for shard in sorted(set(weight_map.values())):
                loaded.update(read_state_dict(path.parent / shard))
        else:
            raise SeglabError(f"{path}: not a checkpoint seglab reads (.safetensors, .bin, .pt, .pth or an index "
                              ".json)")
    except SeglabError:
        raise
    except Exception as e:  # noqa: BLE001 - an untrusted file fails in many ways: corrupt, unsafe pickle, bad index
        # torch's own message for a refused pickle runs to a page; keep its first line, which says why.
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if isinstance(e, pickle.UnpicklingError):
            first = "it holds pickled objects other than tensors, which seglab refuses to load"
        raise SeglabError(f"could not read weights from {path} (damaged, or not a weights file): "
                          f"{type(e).__name__}: {first}") from None
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise SeglabError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(loaded)


def compare_keys(
    own: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """(missing, unknown, wrong-shape) keys of a state dict `theirs` against a model's own state dict `own`."""
    missing = sorted(set(own) - set(theirs))
    unknown = sorted(set(theirs) - set(own))
    wrong = sorted(k for k in set(own) & set(theirs) if own[k].shape != theirs[k].shape)
    return missing, unknown, wrong


def listing(keys: Sequence[str], limit: int = 20) -> str:
    """The first `limit` keys, comma-separated, and how many more there are."""
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def describe_keys(
    own: Mapping[str, torch.Tensor],
    theirs: Mapping[str, torch.Tensor],
    missing: Sequence[str] = (),
    unknown: Sequence[str] = (),
    wrong: Sequence[str] = (),
) -> str:
    """One line naming the keys that keep a state dict from fitting a model (the report of every weight loader)."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {listing(list(missing))}")
    if unknown:
        parts.append(f"{len(unknown)} unknown key(s): {listing(list(unknown))}")
    if wrong:
        parts.append(f"{len(wrong)} key(s) of the wrong shape: "
                     + listing([f"{k} {tuple(theirs[k].shape)} vs {tuple(own[k].shape)}" for k in wrong]))
    return "; ".join(parts)


def load_state_dict_checked(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    *,
    what: str | None = None,
    optional: tuple[str, ...] = (),
    missing_counters: bool = False,
    unknown: Sequence[str] = (),
    hint: str = "",
) -> None:
    """Load `state` (in the model's own key names) into model, in place, after checking that it fits exactly.

    Every key of the model must be in `state` with the model's shape, and `state` may hold no other key;
    otherwise nothing is loaded and one SeglabError names `source` and the missing, unknown and wrongly shaped
    keys. Exceptions, for weights that leave part of the model freshly initialised: keys starting with one of
    `optional` may be missing, and with missing_counters so may BatchNorm's num_batches_tracked counters (files
    of other libraries often lack them); those keep the model's values. `unknown`: further keys of the source
    that have no place in the model (e.g. names a converter did not know), reported with the others. what: how
    the message names the model (default its class name); hint: said after it, e.g. which architecture the
    weights are for.
    """
    own = model.state_dict()
    missing, not_own, wrong = compare_keys(own, state)
    missing = [k for k in missing if not k.startswith(optional)
               and not (missing_counters and k.endswith("num_batches_tracked"))]
    unknown = [*unknown, *not_own]
    if missing or unknown or wrong:
        what = what or model.__class__.__name__
        lead = (f"{source} lacks {len(missing)} key(s) {what} needs{hint}" if not (unknown or wrong)
                else f"{source} does not fit {what}{hint}")
        raise SeglabError(f"{lead}: {describe_keys(own, state, missing, unknown, wrong)}")
    with torch.no_grad():
        model.load_state_dict(dict(state), strict=False)


__all__ = ["compare_keys", "describe_keys", "listing", "load_state_dict_checked", "read_state_dict"]
