"""The documentation stays true: a short README, no paths of one machine, no results row of a failed download, a
MkDocs nav that names every page, and a code map that names every module of src/seglab (and only those)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
MACHINE_PATH = re.compile(r"(?<![\w.$])(/work/|/root/|/home/[\w.-]+/|/tmp/[\w.-])")


def test_readme_is_a_front_door_of_at_most_200_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    assert "pip install -e . && seglab demo" in lines[lines.index("```bash") + 1]  # the first command: the core


def test_no_page_holds_a_path_of_this_machine_or_a_failed_download():
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()[:80]}" for p in PAGES
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if MACHINE_PATH.search(line) or "could not reach" in line]
    assert not found, "\n".join(found)


def test_the_machine_path_pattern_finds_what_it_must():
    assert MACHINE_PATH.search("--data-root /work/shared/data") and MACHINE_PATH.search("see /tmp/run1")
    assert not MACHINE_PATH.search("--data-root ../shared/data/oxford-iiit-pet-sample $PETS")


def _nav_pages(nav: list) -> list[str]:
    out: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += _nav_pages(value) if isinstance(value, list) else [value]
    return out


def test_mkdocs_nav_names_every_page_and_only_pages_that_exist():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = _nav_pages(config["nav"])
    assert all((DOCS / page).is_file() for page in nav), nav
    pages = {str(p.relative_to(DOCS)) for p in DOCS.glob("*.md")}
    assert pages == set(nav)


def test_code_map_names_every_module_and_only_modules_that_exist():
    text = (DOCS / "architecture.md").read_text()
    named = set(re.findall(r"`(seglab/[\w/]+\.py)`", text))
    modules = {str(p.relative_to(ROOT / "src")) for p in (ROOT / "src" / "seglab").rglob("*.py")}
    assert named - modules == set(), "named but not in src/seglab"
    assert modules - named == set(), "in src/seglab but not on docs/architecture.md"
