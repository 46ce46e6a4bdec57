"""seglab's own error type: every error a user can cause is raised as a SeglabError."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class SeglabError(Exception):
    """An error caused by input or options: its message names the file or option and what to do."""


def check_known(given: Iterable[object], known: Iterable[str], where: str = "", noun: str = "option") -> None:
    """Raise a SeglabError naming the names in `given` that are not in `known`, and listing the valid ones:
    "unknown option(s) depth for a ViT; valid: ..." (where=" for a ViT")."""
    known = set(known)
    unknown = sorted(str(k) for k in set(given) - known)
    if unknown:
        raise SeglabError(f"unknown {noun}(s) {', '.join(unknown)}{where}; valid: {', '.join(sorted(known))}")


def check_file(path: str | Path, what: str) -> Path:
    """`path` as a Path when it is an existing file; else a SeglabError: "{what} not found: path" or "is not a file"."""
    path = Path(path)
    if not path.exists():
        raise SeglabError(f"{what} not found: {path}")
    if not path.is_file():
        raise SeglabError(f"{what} is not a file: {path}")
    return path
