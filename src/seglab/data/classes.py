"""classes.json: the class names of a user's dataset, and for colour masks each class's colour.

A list of names (["background", "cat"]: the mask values are class ids into it), or of entries
{"name": "cat", "color": [255, 0, 0]} (an entry with "ignore": true marks an ignore colour, e.g. VOC's border
colour), or a mapping {"cat": [255, 0, 0], ...}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import SeglabError


@dataclass(frozen=True)
class ClassSpec:
    """What classes.json says: class names, and (for colour masks) one colour per class and ignore colours."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...] = ()  # empty, or one per class
    ignore_colors: tuple[tuple[int, int, int], ...] = ()


def read_classes_json(path: str | Path) -> ClassSpec:
    """Read classes.json: a list of names, or of {"name": ..., "color": [r, g, b]} (optionally "ignore": true)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SeglabError(f"classes.json is not valid JSON ({e}): {path}") from None
    except OSError as e:
        raise SeglabError(f"cannot read {path} ({e})") from None
    example = '["background", "cat"] or [{"name": "cat", "color": [255, 0, 0]}, ...]'
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        data = [{"name": str(k), "color": v} for k, v in data.items()]  # {"cat": [255, 0, 0], ...}
    if not (isinstance(data, list) and data):
        raise SeglabError(f"classes.json must be a non-empty JSON list, e.g. {example}: {path}")
    names: list[str] = []
    colors: list[tuple[int, int, int]] = []
    ignore: list[tuple[int, int, int]] = []
    for i, entry in enumerate(data):
        if isinstance(entry, str):
            names.append(entry)
            continue
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)):
            raise SeglabError(f"classes.json entry {i} must be a name or {{\"name\": ..., \"color\": [r, g, b]}}, "
                              f"not {entry!r}: {path}")
        color = entry.get("color", entry.get("colour"))
        if color is not None:
            if not (isinstance(color, list) and len(color) == 3
                    and all(isinstance(c, int) and 0 <= c <= 255 for c in color)):
                raise SeglabError(f"classes.json entry {i} ({entry['name']!r}): color must be [r, g, b] with "
                                  f"0..255 integers, not {color!r}: {path}")
            color = tuple(color)
        if entry.get("ignore"):
            if color is None:
                raise SeglabError(f"classes.json entry {i} ({entry['name']!r}) is an ignore entry without a color: "
                                  f"{path}")
            ignore.append(color)
            continue
        names.append(entry["name"])
        if color is not None:
            colors.append(color)
    if colors and len(colors) != len(names):
        raise SeglabError(f"classes.json gives colours for {len(colors)} of its {len(names)} classes; give every "
                          f"class a color (or none): {path}")
    if len(set(colors)) != len(colors) or set(colors) & set(ignore):
        raise SeglabError(f"classes.json gives one colour to several entries; every colour must be distinct: {path}")
    if len(names) > 255:
        raise SeglabError(f"classes.json names {len(names)} classes; at most 255 (ids 0..254, 255 = ignore): {path}")
    if len(set(names)) != len(names):
        raise SeglabError(f"classes.json names a class twice; class names must be distinct: {path}")
    return ClassSpec(tuple(names), tuple(colors), tuple(ignore))
