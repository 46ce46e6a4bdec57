"""Split names: each dataset's own (train, validation) pair, and the other names the two go by in a user's folders."""

from __future__ import annotations

# Each dataset's own (train, validation) split names: what --train-split / --val-split default to.
DEFAULT_SPLITS = {"oxford-pets": ("trainval", "test"), "folder": ("train", "val"), "voc": ("train", "val"),
                  "synthetic": ("train", "val")}
# The names of the two default splits, as split folders (or the split asked for) may spell them.
SPLIT_ALIASES = {"train": ("train", "training", "trainval"), "val": ("val", "valid", "validation", "test")}


def canonical_split(split: str) -> str:
    """"train" or "val" for any of their names in SPLIT_ALIASES (training, trainval; valid, validation, test); any
    other split name as it is."""
    return next((name for name, aliases in SPLIT_ALIASES.items() if split in aliases), split)


__all__ = ["DEFAULT_SPLITS", "SPLIT_ALIASES", "canonical_split"]
