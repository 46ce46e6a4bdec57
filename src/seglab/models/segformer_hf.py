"""HF transformers' SegFormer checkpoints -> seglab's Segformer: reading the files and converting the key names.

Reads a checkpoint folder or file offline (safetensors, or torch.load(weights_only=True) for .bin: nothing
unpickles), in the key names of transformers 4.x and 5.x, and loads it into a Segformer (models/segformer.py),
checking the architecture first. Kept apart from the architecture, as HF keeps its convert_* scripts apart.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import SeglabError
from .segformer import Segformer, SegformerConfig, variant_of
from .state_dict import listing, load_state_dict_checked, read_state_dict

logger = logging.getLogger("seglab.models.segformer")  # one logger for the SegFormer, its weights included

# ---------------------------------------------------------------------------------------------------------------
# HF weight import.
# On disk (save_pretrained, in transformers 4.x and 5.x alike) and in 4.x's state_dict(), keys are 4.x names:
#   segformer.encoder.patch_embeddings.{i}.proj / .layer_norm, segformer.encoder.block.{i}.{j}.layer_norm_1,
#   .attention.self.query|key|value|sr|layer_norm, .attention.output.dense, .layer_norm_2, .mlp.dense1,
#   .mlp.dwconv.dwconv, .mlp.dense2; segformer.encoder.layer_norm.{i}; decode_head.linear_c.{i}.proj,
#   decode_head.linear_fuse, decode_head.batch_norm, decode_head.classifier.
# transformers 5.x renames modules in memory (its state_dict()): segformer.stages.{i}.patch_embeddings.*,
#   segformer.stages.{i}.blocks.{j}.layernorm_before, .attention.q_proj|k_proj|v_proj|o_proj,
#   .attention.sequence_reduction.sequence_reduction|layer_norm, .layernorm_after, .mlp.fc1|dwconv.dwconv|fc2,
#   segformer.stages.{i}.layer_norm, decode_head.linear_projections.{i}.proj (the rest as 4.x).
# Encoder-only checkpoints: SegformerModel has no "segformer." prefix; SegformerForImageClassification (the
# ImageNet MiT checkpoints) adds an image classifier "classifier.weight|bias", which is dropped.
# ---------------------------------------------------------------------------------------------------------------

_BLOCK_KEYS = {  # inside block (stage i, block j): 4.x and 5.x name -> seglab name
    "layer_norm_1": "norm1", "layernorm_before": "norm1",
    "attention.self.query": "attn.q", "attention.q_proj": "attn.q",
    "attention.self.key": "attn.k", "attention.k_proj": "attn.k",
    "attention.self.value": "attn.v", "attention.v_proj": "attn.v",
    "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
    "attention.self.sr": "attn.sr", "attention.sequence_reduction.sequence_reduction": "attn.sr",
    "attention.self.layer_norm": "attn.sr_norm", "attention.sequence_reduction.layer_norm": "attn.sr_norm",
    "layer_norm_2": "norm2", "layernorm_after": "norm2",
    "mlp.dense1": "mlp.fc1", "mlp.fc1": "mlp.fc1",
    "mlp.dwconv.dwconv": "mlp.dwconv",
    "mlp.dense2": "mlp.fc2", "mlp.fc2": "mlp.fc2",
}
_WB = r"(weight|bias)"
_KEY_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), r) for p, r in [
        # transformers 4.x (and every file save_pretrained writes)
        (rf"(?:segformer\.)?encoder\.patch_embeddings\.(\d+)\.proj\.{_WB}", r"encoder.stages.\1.patch_embed.proj.\2"),
        (rf"(?:segformer\.)?encoder\.patch_embeddings\.(\d+)\.layer_norm\.{_WB}",
         r"encoder.stages.\1.patch_embed.norm.\2"),
        (rf"(?:segformer\.)?encoder\.block\.(\d+)\.(\d+)\.(.+)\.{_WB}", r"encoder.stages.\1.blocks.\2.{}.\4"),
        (rf"(?:segformer\.)?encoder\.layer_norm\.(\d+)\.{_WB}", r"encoder.stages.\1.norm.\2"),
        # transformers 5.x in memory
        (rf"(?:segformer\.)?stages\.(\d+)\.patch_embeddings\.proj\.{_WB}", r"encoder.stages.\1.patch_embed.proj.\2"),
        (rf"(?:segformer\.)?stages\.(\d+)\.patch_embeddings\.layer_norm\.{_WB}",
         r"encoder.stages.\1.patch_embed.norm.\2"),
        (rf"(?:segformer\.)?stages\.(\d+)\.blocks\.(\d+)\.(.+)\.{_WB}", r"encoder.stages.\1.blocks.\2.{}.\4"),
        (rf"(?:segformer\.)?stages\.(\d+)\.layer_norm\.{_WB}", r"encoder.stages.\1.norm.\2"),
        # decoder, both
        (rf"decode_head\.(?:linear_c|linear_projections)\.(\d+)\.proj\.{_WB}", r"decoder.linear.\1.\2"),
        (r"decode_head\.linear_fuse\.weight", "decoder.fuse.weight"),
        (r"decode_head\.batch_norm\.(weight|bias|running_mean|running_var|num_batches_tracked)", r"decoder.bn.\1"),
        (rf"decode_head\.classifier\.{_WB}", r"decoder.classifier.\1"),
    ]
]
_IMAGE_CLASSIFIER = re.compile(rf"classifier\.{_WB}")  # SegformerForImageClassification's head: dropped


def _seglab_key(key: str) -> str | None:
    for pattern, template in _KEY_RULES:
        m = pattern.fullmatch(key)
        if m is None:
            continue
        if "{}" in template:  # a block parameter: map its inner name
            inner = _BLOCK_KEYS.get(m.group(3))
            return None if inner is None else m.expand(template).format(inner)
        return m.expand(template)
    return None


def _map_keys(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """(seglab state dict, dropped image-classifier keys, unknown keys)."""
    mapped: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    dropped, unknown = [], []
    for key, value in state_dict.items():
        new = _seglab_key(key)
        if new is None:
            (dropped if _IMAGE_CLASSIFIER.fullmatch(key) else unknown).append(key)
            continue
        if new in mapped:
            raise SeglabError(f"checkpoint keys {source[new]!r} and {key!r} both hold seglab's {new!r}")
        mapped[new], source[new] = value, key
    return mapped, dropped, unknown


def hf_state_dict_to_seglab(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an HF Segformer state dict (transformers 4.x or 5.x names) to seglab's names.

    Accepts SegformerForSemanticSegmentation, SegformerModel and SegformerForImageClassification checkpoints
    (the image classifier `classifier.*` is dropped). Keys it does not know raise SeglabError listing them.
    """
    mapped, _, unknown = _map_keys(state_dict)
    if unknown:
        raise SeglabError(f"{len(unknown)} key(s) are not HF Segformer weights: {listing(unknown)}")
    return mapped


def read_hf_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(state dict, config.json as a dict or None) from a checkpoint folder or a .safetensors / .bin file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SeglabError(f"no weights at {path}: give a checkpoint folder or a .safetensors / .bin file")
    config = None
    if path.is_dir():
        names = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
        found = [path / n for n in names if (path / n).is_file()]
        if not found:
            raise SeglabError(f"{path} holds none of: {', '.join(names)}")
        if (path / "config.json").is_file():
            try:
                config = json.loads((path / "config.json").read_text())
            except (OSError, ValueError) as e:
                raise SeglabError(f"could not read {path / 'config.json'}: {e}") from None
        path = found[0]
    return read_state_dict(path), config


def _check_hf_config(hf: Mapping[str, Any], config: SegformerConfig, where: str) -> None:
    pairs = [("hidden_sizes", "hidden_sizes"), ("depths", "depths"), ("num_attention_heads", "num_heads"),
             ("sr_ratios", "sr_ratios"), ("patch_sizes", "patch_sizes"), ("strides", "strides"),
             ("num_channels", "in_channels")]
    diffs = []
    for hf_name, name in pairs:
        if hf_name in hf:
            theirs, ours = hf[hf_name], getattr(config, name)
            if (tuple(theirs) if isinstance(theirs, list) else theirs) != ours:
                diffs.append(f"{hf_name} {theirs} (model: {ours})")
    ratios = hf.get("mlp_ratios")
    if isinstance(ratios, list) and any(r != config.mlp_ratio for r in ratios):
        diffs.append(f"mlp_ratios {ratios} (model: {config.mlp_ratio})")
    if diffs:
        theirs = variant_of(hf.get("hidden_sizes", ()), hf.get("depths", ()), None)
        raise SeglabError(
            f"the checkpoint at {where} is {'segformer-' + theirs if theirs else 'another SegFormer'}, the model is "
            f"{'segformer-' + config.variant if config.variant else 'a custom SegFormer'}: {'; '.join(diffs)}"
        )


def _architecture_hint(mapped: Mapping[str, torch.Tensor], config: SegformerConfig) -> str:
    """' (the checkpoint is segformer-b1: widths .., depths ..; the model ..)' when the encoders differ, else ''."""
    widths: dict[int, int] = {}
    depths: dict[int, int] = {}
    for k, v in mapped.items():
        m = re.fullmatch(r"encoder\.stages\.(\d+)\.(?:norm\.weight|blocks\.(\d+)\..*)", k)
        if m is None:
            continue
        stage = int(m.group(1))
        if m.group(2) is None:
            widths[stage] = v.shape[0]
        else:
            depths[stage] = max(depths.get(stage, 0), int(m.group(2)) + 1)
    theirs_w = tuple(widths[i] for i in sorted(widths))
    theirs_d = tuple(depths[i] for i in sorted(depths))
    if not theirs_w or (theirs_w, theirs_d) == (config.hidden_sizes, config.depths):
        return ""
    name = variant_of(theirs_w, theirs_d, None)
    ours = config.variant
    return (f" (the checkpoint is {'segformer-' + name if name else 'another SegFormer'}: stage widths {theirs_w}, "
            f"depths {theirs_d}; the model is {'segformer-' + ours if ours else 'a custom SegFormer'}: "
            f"{config.hidden_sizes}, {config.depths})")


def load_hf_weights(model: Segformer, path: str | os.PathLike[str]) -> None:
    """Load an HF Segformer checkpoint (folder or file, transformers 4.x or 5.x names) into model, in place.

    Full segmentation checkpoints load whole, except a classifier for another number of classes, which is
    re-initialised (with a warning). Encoder-only checkpoints (SegformerModel, the ImageNet MiT ones) leave the
    decoder freshly initialised. Unknown, missing or mis-shaped keys raise SeglabError listing them.
    """
    state_dict, hf_config = read_hf_checkpoint(path)
    if hf_config is not None:
        _check_hf_config(hf_config, model.config, str(path))
    mapped, dropped, unknown = _map_keys(state_dict)
    own = model.state_dict()
    # A classifier for another number of classes is re-initialised; an encoder-only checkpoint leaves the whole
    # decoder fresh. Both are the keys allowed to be missing from what is loaded.
    classifier = [k for k, v in mapped.items()
                  if k.startswith("decoder.classifier.") and k in own and v.shape != own[k].shape]
    encoder_only = not any(k.startswith("decoder.") for k in mapped)
    theirs = mapped[classifier[0]].shape[0] if classifier else None
    mapped = {k: v for k, v in mapped.items() if k not in classifier}
    load_state_dict_checked(model, mapped, str(path), what="this SegFormer",
                            optional=("decoder.",) if encoder_only else tuple(classifier), missing_counters=True,
                            unknown=unknown, hint=_architecture_hint(mapped, model.config))
    if dropped:
        logger.info("%s: dropped the image-classification head (%s)", path, ", ".join(dropped))
    if encoder_only:
        logger.info("%s holds an encoder only: the decoder starts from a fresh initialisation", path)
    if classifier:
        warnings.warn(
            f"{path}: the checkpoint's classifier has {theirs} classes, the model {model.config.num_classes}; "
            "the classifier is re-initialised",
            stacklevel=2,
        )
        model.reset_classifier()


def build_segformer(
    variant: str,
    num_classes: int = 3,
    image_size: int = 128,
    weights: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> Segformer:
    """A SegFormer of a preset ("b0" .. "b5"), optionally with HF weights from a local file or folder."""
    config = SegformerConfig.from_variant(variant, num_classes=num_classes, image_size=image_size, **overrides)
    model = Segformer(config)
    if weights is not None:
        load_hf_weights(model, weights)
    return model


__all__ = ["build_segformer", "hf_state_dict_to_seglab", "load_hf_weights", "read_hf_checkpoint"]
