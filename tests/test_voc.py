"""Pascal VOC 2012: layout, splits, palette masks with 255 borders, and download of a tiny archive from 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.data import build_dataset, download
from seglab.data.voc import ARCHIVE, CLASS_NAMES, build_voc, find_voc_root
from seglab.errors import SeglabError
from helpers import serve

H, W = 20, 28
TRAIN, VAL = ["2007_000032", "2007_000039"], ["2008_000001"]


def voc_mask(i: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=np.uint8)
    m[4:14, 6:20] = 1 + 7 * i  # aeroplane (1), cat (8), ...
    m[4, 6:20] = 255  # the object's border
    return m


def save_palette(m: np.ndarray, path: Path) -> None:
    im = Image.fromarray(m, mode="P")
    im.putpalette([0, 0, 0, 128, 0, 0] + [0, 0, 128] * 7 + [64, 0, 0] + [9, 9, 9] * 244 + [224, 224, 192])
    im.save(path)


def make_voc(root: Path) -> Path:
    """VOCdevkit/VOC2012 in miniature, with images that have no segmentation (as in the real one)."""
    base = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "Annotations"):
        (base / d).mkdir(parents=True)
    for i, name in enumerate(TRAIN + VAL):
        Image.fromarray(np.full((H, W, 3), 40 * i, dtype=np.uint8)).save(base / "JPEGImages" / f"{name}.jpg")
        save_palette(voc_mask(i), base / "SegmentationClass" / f"{name}.png")
    Image.new("RGB", (W, H)).save(base / "JPEGImages" / "2009_999999.jpg")  # detection only: no mask
    seg = base / "ImageSets" / "Segmentation"
    (seg / "train.txt").write_text("\n".join(TRAIN) + "\n")
    (seg / "val.txt").write_text("\n".join(VAL) + "\n")
    (seg / "trainval.txt").write_text("\n".join(TRAIN + VAL) + "\n")
    return root


def test_voc_from_an_extracted_folder(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    assert find_voc_root(root) == root / "VOCdevkit" / "VOC2012"
    assert find_voc_root(root / "VOCdevkit") == root / "VOCdevkit" / "VOC2012"
    kw = {"root": root, "image_size": (H, W), "cache_dir": tmp_path / "c", "quiet": True}
    train = build_dataset("voc", "train", **kw)
    assert train.class_names == CLASS_NAMES and len(CLASS_NAMES) == 21
    assert train.ids == TRAIN and np.array_equal(train.masks[1].numpy(), voc_mask(1))  # 255 kept as ignore
    assert build_dataset("voc", "val", **kw).ids == VAL
    assert "palette PNGs, index = class id (VOC 2012) (255 = ignore) -> background, aeroplane" in train.describe_masks()
    # --dataset folder on a VOC layout reads it as VOC (not 5 images, 3 of them without masks).
    assert build_dataset("folder", "train", **kw).ids == TRAIN
    with pytest.raises(SeglabError, match="no split 'test'"):
        build_dataset("voc", "test", **kw)
    with pytest.raises(SeglabError, match="seglab data download voc"):
        build_dataset("voc", "train", root=tmp_path / "none", cache_dir=tmp_path / "c")


def test_voc_bad_mask_value_names_the_file(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    m = voc_mask(0)
    m[0, 0] = 30
    save_palette(m, root / "VOCdevkit" / "VOC2012" / "SegmentationClass" / f"{TRAIN[0]}.png")
    with pytest.raises(SeglabError, match=rf"value\(s\) 30 .*{TRAIN[0]}.png"):
        build_voc("train", root=root, image_size=8, cache_dir=tmp_path / "c", quiet=True)


@pytest.fixture()
def voc_server(tmp_path_factory):
    tree = make_voc(tmp_path_factory.mktemp("tree"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(tree / "VOCdevkit", arcname="VOCdevkit")
    body = buf.getvalue()
    with serve({ARCHIVE: body}, "voc") as (url, state):
        yield url, state, body


def test_voc_download_resumes_checks_md5_and_extracts(voc_server, tmp_path: Path, monkeypatch) -> None:
    url, state, body = voc_server
    monkeypatch.setattr(download, "_RETRY_DELAYS", (0, 0, 0))
    md5 = hashlib.md5(body).hexdigest()
    root = tmp_path / "voc"
    state.mode = "cut_once"  # the first transfer stops halfway: the download resumes with a Range request
    ds = build_voc("val", root=root, download=True, mirror=url, md5=md5, image_size=8, cache_dir=tmp_path / "c",
                   quiet=True)
    assert ds.ids == VAL
    assert [r["range"] is not None for r in state.requests] == [False, True]
    assert (root / ARCHIVE).read_bytes() == body and (root / f".{ARCHIVE}.extracted").exists()
    # Already extracted: nothing is fetched again.
    build_voc("train", root=root, download=True, mirror=url, md5=md5, image_size=8, cache_dir=tmp_path / "c",
              quiet=True)
    assert len(state.requests) == 2
    # A wrong MD5 deletes the file and says so.
    with pytest.raises(SeglabError, match="MD5 mismatch"):
        build_voc("train", root=tmp_path / "other", download=True, mirror=url, md5="0" * 32, image_size=8,
                  cache_dir=tmp_path / "c", quiet=True)
    assert not list((tmp_path / "other").glob("*.part"))


def test_voc_download_refuses_an_unsafe_member(voc_server, tmp_path: Path, monkeypatch) -> None:
    url, state, _ = voc_server
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    evil = buf.getvalue()
    state.files[f"/voc/{ARCHIVE}"] = evil
    with pytest.raises(SeglabError, match=r"refusing to extract .*'\.\./evil\.txt' contains '\.\.'"):
        build_voc("train", root=tmp_path / "voc", download=True, mirror=url, md5=hashlib.md5(evil).hexdigest(),
                  quiet=True)
    assert not (tmp_path / "evil.txt").exists()


def test_voc_layout_without_split_lists_and_with_rgb_masks(tmp_path: Path) -> None:
    from seglab.data.voc import voc_colour

    root = make_voc(tmp_path / "voc")
    base = root / "VOCdevkit" / "VOC2012"
    import shutil

    shutil.rmtree(base / "ImageSets")
    for i, name in enumerate(TRAIN + VAL):  # masks saved as RGB pictures in VOC's colours
        rgb = np.array([voc_colour(v) for v in range(256)], dtype=np.uint8)[voc_mask(i)]
        Image.fromarray(rgb).save(base / "SegmentationClass" / f"{name}.png")
    kw = {"root": root, "image_size": (H, W), "cache_dir": tmp_path / "c", "quiet": True}
    train, val = build_dataset("folder", "train", **kw), build_dataset("folder", "val", **kw)
    assert sorted(train.ids + val.ids) == sorted(TRAIN + VAL) and train.ids and val.ids
    everything = build_dataset("voc", "trainval", **kw)
    k = everything.ids.index(VAL[0])
    assert np.array_equal(everything.masks[k].numpy(), voc_mask(2))  # 255 borders back as ignore
