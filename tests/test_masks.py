"""Mask formats: detection, normalisation to class ids, the summary line, and the folder layouts that use them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.data import build_dataset
from seglab.data.classes import read_classes_json
from seglab.data.folders import FolderSource, val_stems
from seglab.data.io import IGNORE_INDEX as IGNORE
from seglab.data.mask_detect import detect_mask_format, scan_masks
from seglab.data.masks import MaskFormat
from seglab.errors import SeglabError
from helpers import H, W, grey, make, mask_ids

def fmt_of(root: Path, tmp_path: Path, **kw) -> FolderSource:
    return FolderSource(root, "all", cache_dir=tmp_path / "cache", **kw)


def test_binary_0_255_png_is_two_classes_255_is_foreground(tmp_path: Path) -> None:
    root = make(tmp_path / "d", 6, grey({1: 255}))
    ds = build_dataset("folder", "all", root=root, image_size=(H, W), cache_dir=tmp_path / "c", quiet=True)
    assert ds.class_names == ("background", "foreground")
    for k in range(6):
        assert np.array_equal(ds.masks[k].numpy(), mask_ids(k))  # 255 read as class 1, nothing ignored
    fmt = fmt_of(root, tmp_path).mask_format
    line = fmt.describe([0.71, 0.29])
    assert line == "binary 0/255 -> background, foreground; train pixels 71% / 29%"


def test_binary_0_1_and_one_bit(tmp_path: Path) -> None:
    root = make(tmp_path / "d", 4, grey())
    assert fmt_of(root, tmp_path).mask_format.describe() == "binary 0/1 -> background, foreground"
    root2 = make(tmp_path / "e", 4, lambda p, i: Image.fromarray(mask_ids(i) * 255).convert("1").save(p))
    src = fmt_of(root2, tmp_path)
    assert src.class_names == ("background", "foreground")
    assert np.array_equal(src.load(2)[1], mask_ids(2))


def test_jpeg_binary_masks_are_snapped_and_counted(tmp_path: Path) -> None:
    root = make(tmp_path / "d", 8, grey({1: 255}, fmt="JPEG", quality=70), suffix=".jpg")
    raw = np.asarray(Image.open(root / "masks" / "im000.jpg"))
    assert len(np.unique(raw)) > 2  # JPEG noise: values scatter around 0 and 255
    src = fmt_of(root, tmp_path)
    fmt = src.mask_format
    assert fmt.kind == "binary" and fmt.class_names == ("background", "foreground") and fmt.snap
    noisy = int(((raw != 0) & (raw != 255)).sum())
    assert noisy > 0 and fmt.snapped >= noisy
    assert f"{fmt.snapped:,} pixels" in fmt.describe()
    ids = src.load(0)[1]
    assert set(np.unique(ids)) == {0, 1}
    assert (ids == mask_ids(0)).mean() > 0.97  # only edge pixels can move


def test_jpeg_masks_that_are_not_a_few_values_are_refused(tmp_path: Path) -> None:
    def noise(p: Path, i: int) -> None:
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (H, W), dtype=np.uint8)).save(p, format="JPEG")
    root = make(tmp_path / "d", 3, noise, suffix=".jpg")
    with pytest.raises(SeglabError, match="JPEG .*PNG"):
        fmt_of(root, tmp_path)


def test_palette_masks_index_is_class_255_ignore(tmp_path: Path) -> None:
    def write(p: Path, i: int) -> None:
        ids = mask_ids(i, 3)
        ids[0, :] = 255  # a VOC-style border
        im = Image.fromarray(ids, mode="P")
        im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
        im.save(p)
    root = make(tmp_path / "d", 4, write)
    src = fmt_of(root, tmp_path)
    assert src.mask_format.kind == "palette"
    assert src.mask_format.describe() == "palette PNGs, index = class id (255 = ignore) -> class0, class1, class2"
    got = src.load(1)[1]
    assert (got[0] == IGNORE).all() and np.array_equal(got[1:], mask_ids(1, 3)[1:])


def test_colour_masks_through_classes_json(tmp_path: Path) -> None:
    colours = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    def write(p: Path, i: int) -> None:
        Image.fromarray(np.array(colours, dtype=np.uint8)[mask_ids(i, 3)]).save(p)
    classes = [{"name": n, "color": c} for n, c in zip(["background", "cat", "dog"], colours)]
    root = make(tmp_path / "d", 4, write, classes=classes)
    src = fmt_of(root, tmp_path)
    assert src.class_names == ("background", "cat", "dog")
    assert src.mask_format.describe() == "RGB colours from classes.json -> background, cat, dog"
    assert np.array_equal(src.load(3)[1], mask_ids(3, 3))
    assert src.mask_format.class_colors() == [tuple(c) for c in colours]
    # A colour missing from the map: named with the file and a pixel position.
    arr = np.array(colours, dtype=np.uint8)[mask_ids(0, 3)]
    arr[5, 7] = (0, 255, 0)
    Image.fromarray(arr).save(root / "masks" / "im000.png")
    with pytest.raises(SeglabError, match=r"colour \[0, 255, 0\] at pixel \(x=7, y=5\) .*im000.png"):
        fmt_of(root, tmp_path)


def test_colour_masks_without_colours_say_how_to_write_classes_json(tmp_path: Path) -> None:
    def write(p: Path, i: int) -> None:
        Image.fromarray(np.array([[9, 9, 9], [200, 0, 0]], dtype=np.uint8)[mask_ids(i)]).save(p)
    root = make(tmp_path / "d", 3, write)
    with pytest.raises(SeglabError, match=r"colour images .*classes.json.*\"color\""):
        fmt_of(root, tmp_path)


def test_grey_as_rgb_and_grey_levels(tmp_path: Path) -> None:
    # 0/100/200 saved as RGB grey: three classes, not 201.
    def write(p: Path, i: int) -> None:
        g = np.array([0, 100, 200], dtype=np.uint8)[mask_ids(i, 3)]
        Image.fromarray(np.stack([g, g, g], -1)).save(p)
    root = make(tmp_path / "d", 4, write)
    src = fmt_of(root, tmp_path)
    assert src.class_names == ("class0", "class100", "class200")
    assert "values 0, 100, 200" in src.mask_format.describe() and "not contiguous" in src.mask_format.describe()
    assert np.array_equal(src.load(0)[1], mask_ids(0, 3))


def test_stray_value_is_ignored_and_reported_not_a_class(tmp_path: Path) -> None:
    def write(p: Path, i: int) -> None:
        m = mask_ids(i, 3)
        if i == 4:
            m[2, 3] = 7
        Image.fromarray(m).save(p)
    root = make(tmp_path / "d", 10, write)
    src = fmt_of(root, tmp_path)
    assert src.class_names == ("class0", "class1", "class2")
    assert "stray value 7 in 1 file(s), e.g. im004.png, read as ignore" in src.mask_format.describe()
    assert src.load(4)[1][2, 3] == IGNORE


def test_non_contiguous_common_ids_are_reported(tmp_path: Path) -> None:
    root = make(tmp_path / "d", 4, grey({3: 7}, k=4))
    fmt = fmt_of(root, tmp_path).mask_format
    assert fmt.class_names == ("class0", "class1", "class2", "class7") and fmt.kind == "values"
    assert "not contiguous" in fmt.describe()


def test_class_ids_with_ignore_and_the_ignore_index_setting(tmp_path: Path) -> None:
    def write(p: Path, i: int) -> None:
        m = mask_ids(i, 3)
        m[:2] = 255
        Image.fromarray(m).save(p)
    root = make(tmp_path / "d", 3, write)
    fmt = fmt_of(root, tmp_path).mask_format
    assert fmt.describe() == "class ids 0..2 (255 = ignore) -> class0, class1, class2"
    # ignore_index=0: the stored 0 is ignore; 1, 2 and 255 are the classes (named by their values).
    src = fmt_of(root, tmp_path, ignore_index=0)
    assert src.class_names == ("class1", "class2", "class255")
    got, stored = src.load(0)[1], mask_ids(0, 3)
    stored[:2] = 255
    assert (got[stored == 0] == IGNORE).all() and (got[stored == 255] == 2).all() and (got[stored == 1] == 0).all()


def test_classes_json_names_with_binary_and_outside_values(tmp_path: Path) -> None:
    root = make(tmp_path / "d", 3, grey({1: 255}), classes=["sky", "cloud"])
    assert fmt_of(root, tmp_path).class_names == ("sky", "cloud")
    root = make(tmp_path / "e", 3, grey(k=3), classes=["a", "b"])
    src = fmt_of(root, tmp_path)
    with pytest.raises(SeglabError, match=r"value\(s\) 2 .*im000.png"):
        src.load(0)


def test_format_round_trips_and_keys_the_cache(tmp_path: Path) -> None:
    root = make(tmp_path / "d", 4, grey({1: 255}, fmt="JPEG"), suffix=".jpg")
    fmt = fmt_of(root, tmp_path).mask_format
    again = MaskFormat.from_dict(json.loads(json.dumps(fmt.to_dict())))
    assert again == fmt and again.key() == fmt.key()
    given = FolderSource(root, "all", mask_format=fmt.to_dict())
    assert given.scan is None and np.array_equal(given.load(1)[1], fmt_of(root, tmp_path).load(1)[1])
    other = MaskFormat.from_dict({**fmt.to_dict(), "values": {"0": 0, "255": 1, "128": 255}})
    assert other.key() != fmt.key()
    with pytest.raises(SeglabError, match="not valid"):
        MaskFormat.from_dict({"kind": "binary"})


def test_scan_is_cached_and_redone_when_a_mask_changes(tmp_path: Path) -> None:
    root = make(tmp_path / "d", 3, grey())
    paths = sorted((root / "masks").iterdir())
    a = scan_masks(paths, cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c" / "masks").iterdir())) == 1
    assert scan_masks(paths, cache_dir=tmp_path / "c").hist.tolist() == a.hist.tolist()
    Image.fromarray(np.full((H, W), 2, np.uint8)).save(paths[0])
    b = scan_masks(paths, cache_dir=tmp_path / "c")
    assert b.hist[2] == H * W and detect_mask_format(b).class_names == ("class0", "class1", "class2")


def test_classes_json_errors(tmp_path: Path) -> None:
    p = tmp_path / "classes.json"
    for bad, msg in [({"a": 1}, "list"), ([{"name": "a", "color": [1, 2]}], "color"),
                     ([{"name": "a", "color": [1, 2, 3]}, "b"], "colours for 1 of its 2"),
                     (["a", "a"], "twice"), ([{"name": "a", "color": [1, 2, 3]}, {"name": "b", "color": [1, 2, 3]}],
                                             "distinct")]:
        p.write_text(json.dumps(bad))
        with pytest.raises(SeglabError, match=msg):
            read_classes_json(p)
    p.write_text(json.dumps([{"name": "bg", "color": [0, 0, 0]}, {"name": "void", "color": [9, 9, 9],
                                                                   "ignore": True}]))
    spec = read_classes_json(p)
    assert spec.names == ("bg",) and spec.ignore_colors == ((9, 9, 9),)
    p.write_text(json.dumps({"bg": [0, 0, 0], "cat": [255, 0, 0]}))  # the name -> colour mapping form
    assert read_classes_json(p).colors == ((0, 0, 0), (255, 0, 0))


def test_folder_splits_subfolders_and_80_20(tmp_path: Path) -> None:
    root = make(tmp_path / "d", 4, grey({1: 255}), split="train")
    make(root, 2, grey({1: 255}), split="valid", seed=1)
    kw = {"root": root, "image_size": 8, "cache_dir": tmp_path / "c", "quiet": True}
    assert len(build_dataset("folder", "train", **kw)) == 4
    assert len(build_dataset("folder", "val", **kw)) == 2  # valid/ is the val split
    flat = make(tmp_path / "f", 10, grey())
    kw["root"] = flat
    train, val = build_dataset("folder", "train", **kw), build_dataset("folder", "val", **kw)
    assert len(train) + len(val) == 10 and len(val) >= 1 and not set(train.ids) & set(val.ids)
    # Oxford's split names are aliases, not errors, on a flat folder.
    assert build_dataset("folder", "test", **kw).ids == val.ids
    # Each side keeps a file even when the hash puts all on one side.
    for stems in (["a", "b"], ["x"] * 0 + ["only1", "only2", "only3"]):
        v = val_stems(stems)
        assert 1 <= len(v) < len(stems)


def test_mask_name_suffixes_and_label_folders(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(3):
        Image.new("RGB", (W, H)).save(root / "images" / f"p{i}.jpg")
        Image.fromarray(mask_ids(i) * 255).save(root / "labels" / f"p{i}_mask.png")
    src = fmt_of(root, tmp_path)
    assert all(m is not None for _, m in src.pairs) and src.class_names == ("background", "foreground")


def test_stray_in_binary_masks_and_a_rare_next_class_is_kept(tmp_path: Path) -> None:
    def stray(p: Path, i: int) -> None:
        m = mask_ids(i) * 255
        if i == 3:
            m[0, 0] = 7
        Image.fromarray(m).save(p)
    fmt = fmt_of(make(tmp_path / "a", 10, stray), tmp_path).mask_format
    assert fmt.kind == "binary" and fmt.class_names == ("background", "foreground") and 7 in fmt.stray
    assert fmt.read(tmp_path / "a" / "masks" / "im003.png")[0, 0] == IGNORE

    def rare(p: Path, i: int) -> None:
        m = np.zeros((H, W), np.uint8)
        if i == 3:
            m[0, 0] = 1  # one pixel of the next id: a rare real class, not a stray
        Image.fromarray(m).save(p)
    fmt = fmt_of(make(tmp_path / "b", 10, rare), tmp_path).mask_format
    assert fmt.class_names == ("background", "foreground") and not fmt.stray
