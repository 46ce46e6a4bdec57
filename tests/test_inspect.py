"""inspect_dataset and the pre-flight checks: counts, sizes, shares, problems, preview, the cache reused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from seglab.data import build_dataset
from seglab.data.checks import check_splits
from seglab.data.inspect import inspect_dataset
from helpers import grey, make, mask_ids
from test_voc import make_voc


def test_binary_folder_report_preview_and_problems(tmp_path: Path) -> None:
    root = make(tmp_path / "d", 12, grey({1: 255}))
    Image.new("RGB", (10, 10)).save(root / "images" / "lonely.png")  # no mask
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "masks" / "orphan.png")  # no image
    Image.new("RGB", (40, 30)).save(root / "images" / "big.png")  # mask of another size
    Image.fromarray(mask_ids(0) * 255).save(root / "masks" / "big.png")
    (root / "images" / "broken.png").write_bytes(b"\x89PNG not really")
    Image.fromarray(mask_ids(1) * 255).save(root / "masks" / "broken.png")
    r = inspect_dataset(root, out=tmp_path / "out", cache_dir=tmp_path / "c")
    assert r.dataset == "folder" and r.masks == "binary 0/255 -> background, foreground"
    assert [s.split for s in r.splits] == ["train", "val"]
    assert sum(s.images for s in r.splits) == 15 and sum(s.loaded for s in r.splits) == 12
    every = {k: [x for s in r.splits for x in getattr(s, k)] for k in
             ("images_without_masks", "size_mismatches", "bad_files")}
    assert every["images_without_masks"] == ["lonely.png"]
    assert every["size_mismatches"] == ["big.png 40x30 vs mask 32x24"]
    assert {Path(f).name for f, _ in every["bad_files"]} == {"broken.png", "big.png"}
    assert r.splits[0].masks_without_images == ["orphan.png"]
    text = r.render()
    assert "orphan.png" in text and "lonely.png" in text and "broken.png" in text and "32x24" in text
    for s in r.splits:
        assert abs(sum(s.pixel_share.values()) - 1) < 1e-9 and s.absent == []
    assert not r.ok and len(r.problems) >= 4
    preview = Image.open(tmp_path / "out" / "preview.png")
    assert preview.size[0] >= 4 * 96
    assert json.loads((tmp_path / "out" / "report.json").read_text())["dataset"] == "folder"


def test_clean_folder_is_ok_and_second_call_uses_the_cache(tmp_path: Path) -> None:
    root = make(tmp_path / "d", 10, grey(k=3), split="train")
    make(root, 4, grey(k=3), split="val", seed=1)
    first = inspect_dataset(root, cache_dir=tmp_path / "c")
    assert first.ok, first.problems
    caches = sorted(p.name for p in (tmp_path / "c").iterdir())
    second = inspect_dataset(root, cache_dir=tmp_path / "c")
    assert second.render() == first.render() and sorted(p.name for p in (tmp_path / "c").iterdir()) == caches
    # The training loader reads the very same cache: nothing new is built.
    build_dataset("folder", "train", root=root, image_size=128, cache_dir=tmp_path / "c", quiet=True)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == caches


def test_mostly_ignored_and_one_class_and_shared_files_are_problems(tmp_path: Path) -> None:
    def mostly_ignored(p: Path, i: int) -> None:
        m = mask_ids(i, 3)
        m[: 3 * m.shape[0] // 4] = 255
        Image.fromarray(m).save(p)
    r = inspect_dataset(make(tmp_path / "a", 8, mostly_ignored), cache_dir=tmp_path / "c")
    assert any("more than half" in p for p in r.problems)

    one = make(tmp_path / "b", 6, lambda p, i: Image.fromarray(np.zeros((24, 32), np.uint8)).save(p))
    r = inspect_dataset(one, cache_dir=tmp_path / "c")
    assert any("only 1 class(es) (class0)" in p for p in r.problems)

    same = make(tmp_path / "s", 4, grey(), split="train")
    make(same, 4, grey(), split="val")  # the very same images again
    r = inspect_dataset(same, cache_dir=tmp_path / "c")
    assert any("shares 4 file(s)" in p for p in r.problems)


def test_checks_warn_for_a_class_never_in_training(tmp_path: Path) -> None:
    root = make(tmp_path / "d", 6, grey(k=2), classes=["sky", "sea", "ship"])
    ds = build_dataset("folder", "train", root=root, image_size=8, cache_dir=tmp_path / "c", quiet=True)
    errors, warnings = check_splits(ds)
    assert errors == [] and warnings == [
        "class(es) ship never occur in the training masks (split 'train'): the model cannot learn them and their "
        "metrics show n/a"]


def test_inspect_voc_layout_by_itself(tmp_path: Path) -> None:
    r = inspect_dataset(make_voc(tmp_path / "voc"), cache_dir=tmp_path / "c", image_size=16)
    assert r.dataset == "voc" and [s.split for s in r.splits] == ["train", "val"]
    assert r.splits[0].images == 2 and "cat" in r.splits[1].pixel_share
    assert "aeroplane" in r.splits[1].absent
