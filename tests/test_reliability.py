"""Reliability (issue 5): what real users and real data throw at seglab, on every reader.

The rule: an error a user can cause ends in one clear message naming the file or option (SeglabError; exit code
2 from the CLI, no traceback), and nothing written so far is lost. Every case here is tiny and local: data in
tmp_path, downloads from a server on 127.0.0.1, checkpoints of a few kilobytes (one of 32 MB for SIGKILL).
"""

from __future__ import annotations

import builtins
import io
import json
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from seglab import cli
from seglab.checkpoint import atomic_write, read_checkpoint, save_checkpoint
from seglab.config import TrainConfig
from seglab.data import build_dataset, download, oxford_pets
from seglab.data.oxford_pets import build_oxford_pets
from seglab.errors import SeglabError
from seglab.models import build_model, list_models
from seglab.predict import predict

# The local archive server of the oxford-pets tests (fixtures `server` and `archives`), reused as is.
from helpers import tar_member
from test_oxford_pets import archives, md5, md5s_of, server  # noqa: F401

W, H = 30, 24  # every sample image is 30 wide, 24 tall (as displayed)
SIZE = (H, W)  # datasets are built at the images' own size: nearest resizing is then the identity
CLASSES = ["a", "b", "c"]


def class_mask() -> np.ndarray:
    """(H, W) class ids: rows 0-7 class 0, 8-15 class 1, 16-23 class 2."""
    m = np.zeros((H, W), dtype=np.uint8)
    m[8:16] = 1
    m[16:] = 2
    return m


# ------------------------------------------------------------------------------------------------ image cases


def _rgb(path: Path, colour=(200, 30, 30), fmt: str = "JPEG") -> None:
    Image.new("RGB", (W, H), colour).save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def _noise_jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _rgba(path: Path) -> None:
    arr = np.zeros((H, W, 4), dtype=np.uint8)
    arr[: H // 2] = (255, 0, 0, 255)  # opaque red top half
    arr[H // 2 :] = (0, 255, 0, 0)  # transparent bottom half
    Image.fromarray(arr, mode="RGBA").save(path, format="PNG")


def _palette(path: Path) -> None:
    im = Image.new("P", (W, H), 1)
    im.putpalette([0, 0, 0, 10, 200, 30] + [0] * (256 * 3 - 6))
    im.save(path, format="PNG")


def _i16(path: Path) -> None:
    Image.fromarray(np.full((H, W), 30000, dtype=np.uint16)).save(path, format="PNG")


def exif_jpeg(path: Path, raw: np.ndarray, orientation: int = 6) -> None:
    """A real JPEG whose stored pixels are `raw`, with an EXIF orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(raw).save(path, format="JPEG", exif=exif, quality=95)


def _exif_rotated(path: Path) -> None:
    # Stored 24 wide x 30 tall, left half white; orientation 6 turns it 90 degrees clockwise for display,
    # so it displays 30 wide x 24 tall with the white half on top.
    raw = np.zeros((W, H, 3), dtype=np.uint8)
    raw[:, : H // 2] = 255
    exif_jpeg(path, raw)


def _near(arr: np.ndarray, colour, tol: int = 4) -> bool:
    return bool((np.abs(arr.astype(int) - np.array(colour)) <= tol).all())


# name -> (writer, check of the RGB array (H, W, 3) as read)
GOOD_IMAGES: dict[str, tuple[Callable[[Path], None], Callable[[np.ndarray], bool]]] = {
    "png_named_jpg": (lambda p: _rgb(p, fmt="PNG"), lambda a: _near(a, (200, 30, 30), 0)),
    "rgba": (_rgba, lambda a: _near(a[: H // 2], (255, 0, 0), 0) and _near(a[H // 2 :], (0, 0, 0), 0)),
    "palette": (_palette, lambda a: _near(a, (10, 200, 30), 0)),
    "grayscale_L": (lambda p: Image.new("L", (W, H), 120).save(p, format="JPEG"), lambda a: _near(a, (120,) * 3)),
    "grayscale_I16": (_i16, lambda a: _near(a, (117,) * 3, 0)),  # 30000 / 65535 * 255
    "cmyk": (lambda p: Image.new("CMYK", (W, H), (0, 255, 255, 0)).save(p, format="JPEG"),
             lambda a: bool((a[..., 0] > 200).all() and (a[..., 1:] < 60).all())),
    "exif_rotated": (_exif_rotated, lambda a: bool((a[:10] > 200).all() and (a[14:] < 50).all())),
}

# name -> (writer, a fragment of the message). "bomb*" run with PIL.Image.MAX_IMAGE_PIXELS = 1000.
BAD_IMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated_jpeg": (lambda p: p.write_bytes(_noise_jpeg_bytes()[: len(_noise_jpeg_bytes()) * 2 // 3]), "truncated"),
    "zero_bytes": (lambda p: p.write_bytes(b""), "0 bytes"),
    "text_named_jpg": (lambda p: p.write_text("these are my holiday notes, not a photo\n" * 20), "not an image"),
    "bomb": (lambda p: Image.new("RGB", (64, 64)).save(p, format="PNG"), "decompression-bomb"),
    "bomb_warning_range": (lambda p: Image.new("RGB", (40, 40)).save(p, format="PNG"), "decompression-bomb"),
}

CASE = "x_case"  # the odd sample's stem: sorts after "good", so predict has written good's outputs first


# -------------------------------------------------------------------------------------------------- readers


def _trimap(mask: np.ndarray) -> np.ndarray:
    return mask + 1  # class ids 0/1/2 -> trimap 1 pet / 2 background / 3 border


@dataclass
class Loaded:
    images: dict[str, np.ndarray]  # stem -> (H, W, 3) uint8 as read (datasets: at SIZE = the image's size)
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # stem -> (H, W) class ids (datasets only)
    skipped: list[str] = field(default_factory=list)  # stems left out by skip_bad
    reasons: list[str] = field(default_factory=list)


def make_root(reader: str, root: Path, image_writer=None, mask: np.ndarray | None | Callable = "default",
              image: bool = True) -> Path:
    """A dataset (or a folder of images for predict) with a good sample and the odd one, CASE.

    image_writer writes CASE's image (default: a plain RGB JPEG); mask is CASE's mask array, a writer
    (path -> None), None for no mask file, or "default". image=False leaves CASE's image out.
    """
    if reader == "oxford":
        img_dir, mask_dir, convert = root / "images", root / "annotations" / "trimaps", _trimap
    else:
        img_dir, mask_dir, convert = root / "images", root / "masks", (lambda m: m)
    img_dir.mkdir(parents=True)
    _rgb(img_dir / "good.jpg", (10, 20, 200))
    if image:
        (image_writer or _rgb)(img_dir / f"{CASE}.jpg")
    if reader == "predict":
        return img_dir
    mask_dir.mkdir(parents=True)
    Image.fromarray(convert(class_mask())).save(mask_dir / "good.png")
    if isinstance(mask, str):
        Image.fromarray(convert(class_mask())).save(mask_dir / f"{CASE}.png")
    elif callable(mask):
        mask(mask_dir / f"{CASE}.png")
    elif mask is not None:
        Image.fromarray(mask).save(mask_dir / f"{CASE}.png")
    if reader == "oxford":
        (root / "annotations" / "trainval.txt").write_text(f"good 1 1 1\n{CASE} 1 1 1\n")
        (root / "annotations" / "test.txt").write_text("good 1 1 1\n")
    else:
        (root / "classes.json").write_text(json.dumps(CLASSES))
    return root


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny ViT checkpoint (16x16 input) for predict."""
    torch.manual_seed(0)
    model = build_model("vit", num_classes=3, image_size=16, patch_size=8, embed_size=16, num_blocks=1,
                        num_heads=2, dropout=0.0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, model, {"model": model.seglab_spec, "epoch": 1, "image_size": 16,
                                  "interpolation": "nearest", "class_names": CLASSES})
    return path


def load(reader: str, root: Path, tmp_path: Path, skip_bad: bool = False, ckpt: Path | None = None) -> Loaded:
    if reader == "predict":
        res = predict(ckpt, [root], out_dir=tmp_path / "out", batch_size=1, device="cpu", quiet=True,
                      skip_bad=skip_bad)
        for p in res:
            assert p.mask.shape == (p.image.size[1], p.image.size[0])  # predicted at the image's own size
            assert (tmp_path / "out" / f"{p.path.stem}_mask.png").is_file()
        return Loaded({p.path.stem: np.asarray(p.image) for p in res},
                      skipped=[Path(s).stem for s, _ in res.skipped], reasons=[r for _, r in res.skipped])
    if reader == "oxford":
        ds = build_oxford_pets("trainval", root=root, image_size=SIZE, cache_dir=tmp_path / "cache", skip_bad=skip_bad,
                               quiet=True)
    else:
        ds = build_dataset("folder", "all", root=root, image_size=SIZE, cache_dir=tmp_path / "cache",
                           skip_bad=skip_bad, quiet=True)
    stems = [Path(i).stem for i in ds.ids]
    return Loaded({s: ds.images[k].permute(1, 2, 0).numpy() for k, s in enumerate(stems)},
                  {s: ds.masks[k].numpy() for k, s in enumerate(stems)},
                  skipped=[Path(s).stem for s, _ in ds.skipped], reasons=[r for _, r in ds.skipped])


READERS = ["oxford", "folder", "predict"]


@pytest.fixture
def small_bomb_limit(monkeypatch):
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)  # 30x24 = 720 pixels pass; 64x64 and 40x40 do not


# --------------------------------------------------------------------------------------------- image tests


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("case", sorted(GOOD_IMAGES))
def test_odd_but_valid_images_are_read_correctly(reader, case, tmp_path, tiny_checkpoint):
    writer, check = GOOD_IMAGES[case]
    root = make_root(reader, tmp_path / "data", writer)
    got = load(reader, root, tmp_path, ckpt=tiny_checkpoint)
    assert sorted(got.images) == ["good", CASE] and got.skipped == []
    arr = got.images[CASE]
    assert arr.shape == (H, W, 3) and arr.dtype == np.uint8  # upright, 8-bit RGB
    assert check(arr), f"{case}: unexpected pixels {arr[0, 0]} / {arr[-1, -1]}"
    if reader != "predict":
        assert np.array_equal(got.masks[CASE], class_mask())


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_images_stop_the_run_naming_the_file_or_are_skipped(reader, case, tmp_path, tiny_checkpoint,
                                                                  small_bomb_limit):
    writer, fragment = BAD_IMAGES[case]
    root = make_root(reader, tmp_path / "data", writer)
    with pytest.raises(SeglabError, match=fragment) as info:
        load(reader, root, tmp_path / "a", ckpt=tiny_checkpoint)
    assert f"{CASE}.jpg" in str(info.value) and "--skip-bad" in str(info.value)
    if reader == "predict":  # what was written before the bad file is kept
        assert (tmp_path / "a" / "out" / "good_mask.png").is_file()
    else:  # nothing half-built is left in the cache
        assert not list((tmp_path / "a" / "cache").glob("*/meta.json"))
    got = load(reader, root, tmp_path / "b", skip_bad=True, ckpt=tiny_checkpoint)
    assert list(got.images) == ["good"] and got.skipped == [CASE]
    assert f"{CASE}.jpg" in got.reasons[0]


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_predict_cli_bad_image_exit_2_then_skip_bad(case, tmp_path, tiny_checkpoint, capsys, small_bomb_limit):
    root = make_root("predict", tmp_path / "data", BAD_IMAGES[case][0])
    args = ["predict", str(tiny_checkpoint), str(root), "--out", str(tmp_path / "out"), "--device", "cpu",
            "--batch-size", "1", "--quiet"]
    line = cli_error(capsys, args)
    assert f"{CASE}.jpg" in line and BAD_IMAGES[case][1] in line
    assert cli.main(args + ["--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "wrote 1 mask(s)" in out and "skipped 1 bad file(s)" in out and f"{CASE}.jpg" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_mask.png", "good_overlay.png"]


def test_predict_cli_good_images_including_exif(tmp_path, tiny_checkpoint, capsys):
    root = tmp_path / "imgs"
    root.mkdir()
    for case, (writer, _) in GOOD_IMAGES.items():
        writer(root / f"{case}.jpg")
    assert cli.main(["predict", str(tiny_checkpoint), str(root), "--out", str(tmp_path / "out"), "--device", "cpu",
                     "--quiet"]) == 0
    for case in GOOD_IMAGES:
        with Image.open(tmp_path / "out" / f"{case}_mask.png") as m:
            assert m.size == (W, H)  # the upright size, also for the EXIF-rotated photo


def test_predict_refuses_two_inputs_that_would_write_one_mask(tmp_path, tiny_checkpoint):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        _rgb(tmp_path / d / "same.jpg")
    with pytest.raises(SeglabError, match="same_mask.png"):
        predict(tiny_checkpoint, [tmp_path / "a", tmp_path / "b"], out_dir=tmp_path / "out", device="cpu", quiet=True)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- mask tests


def _mask_with(values: dict[tuple[int, int], int], dtype=np.uint8, trimap: bool = False) -> np.ndarray:
    m = class_mask().astype(dtype)
    if trimap:
        m = m + 1
    for (y, x), v in values.items():
        m[y, x] = v
    return m


def _rgb_mask(coloured: bool, trimap: bool) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        m = _trimap(class_mask()) if trimap else class_mask()
        arr = np.stack([m, m, m], axis=-1)
        if coloured:
            arr[..., 0] = 200
        Image.fromarray(arr, mode="RGB").save(path)
    return write


def _palette_mask(trimap: bool) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        indices = _trimap(class_mask()) if trimap else class_mask()
        im = Image.frombytes("P", (W, H), indices.tobytes())  # palette indices are the class ids
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (252 * 3))
        im.save(path)
    return write


def _mask_cases(reader: str) -> dict[str, tuple[object, str | None]]:
    """name -> (mask: array | writer | None, message fragment, or None when the sample must load correctly)."""
    t = reader == "oxford"

    def big(p: Path) -> None:
        Image.fromarray(_mask_with({(0, 0): 300}, np.uint16, t)).save(p)

    cases = {
        "size_differs": (np.zeros((H, W - 10), dtype=np.uint8) + (1 if t else 0), "differs"),
        "values_outside": ((_mask_with({(0, 0): 0, (1, 1): 255}, trimap=True), "0, 255") if t
                           else (_mask_with({(0, 0): 7, (1, 1): 9}), "7, 9")),
        "sixteen_bit_valid": (lambda p: Image.fromarray(_mask_with({}, np.uint16, t)).save(p), None),
        "sixteen_bit_out_of_range": (big, "300"),
        "rgb_coloured": (_rgb_mask(True, t), "colour"),
        "rgb_gray": (_rgb_mask(False, t), None),
        "palette_indices": (_palette_mask(t), None),
        "truncated_png": (lambda p: (Image.fromarray(np.random.default_rng(1).integers(0, 3, (H, W), np.uint8)).save(p),
                                     p.write_bytes(p.read_bytes()[:60])), "decoded"),
        "zero_bytes": (lambda p: p.write_bytes(b""), "0 bytes"),
        "missing_mask": (None, "trimap" if t else "no mask"),
    }
    if not t:
        cases["one_bit"] = (lambda p: Image.fromarray(class_mask() == 1).convert("1").save(p), None)
    return cases


MASK_CASES = [(reader, case) for reader in ("oxford", "folder") for case in sorted(_mask_cases(reader))]


@pytest.mark.parametrize("reader, case", MASK_CASES)
def test_mask_cases(reader, case, tmp_path):
    mask, fragment = _mask_cases(reader)[case]
    root = make_root(reader, tmp_path / "data", mask=mask)
    if fragment is None:
        got = load(reader, root, tmp_path)
        expected = (class_mask() == 1).astype(np.uint8) if case == "one_bit" else class_mask()
        assert np.array_equal(got.masks[CASE], expected) and got.skipped == []
        return
    with pytest.raises(SeglabError, match=fragment) as info:
        load(reader, root, tmp_path / "a")
    assert CASE in str(info.value)
    got = load(reader, root, tmp_path / "b", skip_bad=True)
    assert list(got.images) == ["good"] and got.skipped == [CASE]


def test_mask_without_image_oxford_listed_is_named_unlisted_is_ignored(tmp_path):
    root = make_root("oxford", tmp_path / "data", image=False)
    with pytest.raises(SeglabError, match=rf"{CASE}.*image .*{CASE}.jpg is missing"):
        load("oxford", root, tmp_path / "a")
    assert load("oxford", root, tmp_path / "b", skip_bad=True).skipped == [CASE]
    # A trimap nobody lists is not a sample at all.
    (root / "annotations" / "trainval.txt").write_text("good 1 1 1\n")
    assert list(load("oxford", root, tmp_path / "c").images) == ["good"]


def test_mask_without_image_folder_is_reported_as_a_warning(tmp_path):
    root = make_root("folder", tmp_path / "data", image=False)
    with pytest.warns(UserWarning, match=rf"1 mask\(s\) .* have no image .*{CASE}.png"):
        got = load("folder", root, tmp_path)
    assert list(got.images) == ["good"] and got.skipped == []


def test_folder_infers_classes_past_bad_masks(tmp_path):
    root = make_root("folder", tmp_path / "data", mask=lambda p: p.write_bytes(b""))
    (root / "classes.json").unlink()
    got = load("folder", root, tmp_path, skip_bad=True)  # the empty mask did not stop the class count
    assert got.skipped == [CASE] and int(got.masks["good"].max()) == 2


# ----------------------------------------------------------------------------------------------- EXIF rule


def _white_top_raw() -> np.ndarray:
    """Stored pixels 40 wide x 20 tall, left half white: with orientation 6 it displays 20 x 40, white on top."""
    raw = np.zeros((20, 40, 3), dtype=np.uint8)
    raw[:, :20] = 255
    return raw


def _exif_masks() -> dict[str, Callable[[Path, bool], None]]:
    def raw_aligned(p: Path, trimap: bool) -> None:  # drawn on the stored pixels: left half class 0
        m = np.ones((20, 40), dtype=np.uint8)
        m[:, :20] = 0
        Image.fromarray(m + trimap).save(p)

    def upright(p: Path, trimap: bool) -> None:  # drawn on the displayed image: top half class 0
        m = np.ones((40, 20), dtype=np.uint8)
        m[:20] = 0
        Image.fromarray(m + trimap).save(p)

    def own_exif(p: Path, trimap: bool) -> None:  # stored like raw_aligned, but carrying the same EXIF tag itself
        m = np.ones((20, 40), dtype=np.uint8)
        m[:, :20] = 0
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(m + trimap).save(p, exif=exif)

    return {"raw_aligned": raw_aligned, "upright": upright, "own_exif": own_exif}


@pytest.mark.parametrize("reader", ["oxford", "folder"])
@pytest.mark.parametrize("mask_kind", ["raw_aligned", "upright", "own_exif"])
def test_exif_rotated_photo_keeps_its_mask_aligned(reader, mask_kind, tmp_path):
    root = tmp_path / "data"
    trimap = reader == "oxford"
    img_dir = root / "images"
    mask_dir = root / ("annotations/trimaps" if trimap else "masks")
    img_dir.mkdir(parents=True)
    mask_dir.mkdir(parents=True)
    exif_jpeg(img_dir / "rot.jpg", _white_top_raw())
    _exif_masks()[mask_kind](mask_dir / "rot.png", trimap)
    if trimap:
        (root / "annotations" / "trainval.txt").write_text("rot 1 1 1\n")
        ds = build_oxford_pets("trainval", root=root, image_size=(40, 20), cache_dir=tmp_path / "c", quiet=True)
    else:
        (root / "classes.json").write_text(json.dumps(["white", "black"]))
        ds = build_dataset("folder", "all", root=root, image_size=(40, 20), cache_dir=tmp_path / "c", quiet=True)
    image, mask = ds.images[0].numpy(), ds.masks[0].numpy()  # (3, 40, 20), (40, 20): upright
    white = image.mean(0) > 128
    assert white[:18].all() and not white[22:].any()
    assert (mask[:20] == 0).all() and (mask[20:] == 1).all()  # class 0 exactly where the white pixels are


@pytest.mark.parametrize("reader", ["oxford", "folder"])
def test_exif_rotated_photo_with_a_mask_of_neither_size_is_named(reader, tmp_path):
    root = tmp_path / "data"
    trimap = reader == "oxford"
    mask_dir = root / ("annotations/trimaps" if trimap else "masks")
    (root / "images").mkdir(parents=True)
    mask_dir.mkdir(parents=True)
    exif_jpeg(root / "images" / "rot.jpg", _white_top_raw())
    Image.fromarray(np.ones((30, 30), dtype=np.uint8)).save(mask_dir / "rot.png")
    if trimap:
        (root / "annotations" / "trainval.txt").write_text("rot 1 1 1\n")
        call = lambda: build_oxford_pets("trainval", root=root, cache_dir=tmp_path / "c", quiet=True)  # noqa: E731
    else:
        call = lambda: build_dataset("folder", "all", root=root, cache_dir=tmp_path / "c", quiet=True)  # noqa: E731
    with pytest.raises(SeglabError, match=r"mask size 30x30 differs .* 20x40, stored 40x20 .*rot.png.*rot.jpg"):
        call()


# ------------------------------------------------------------------------------------------- empty folders


def test_empty_inputs_are_named(tmp_path, tiny_checkpoint, capsys):
    # oxford-pets: a split file listing nothing
    root = make_root("oxford", tmp_path / "pets")
    (root / "annotations" / "trainval.txt").write_text("# nothing here\n")
    with pytest.raises(SeglabError, match="trainval.txt lists no images"):
        build_oxford_pets("trainval", root=root, cache_dir=tmp_path / "c", quiet=True)
    # folder: images/ and masks/ with nothing in them
    empty = tmp_path / "folder"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    with pytest.raises(SeglabError, match=re.escape(f"no images in {empty / 'images'}")):
        build_dataset("folder", "all", root=empty, cache_dir=tmp_path / "c")
    # predict, library and CLI: an empty folder
    with pytest.raises(SeglabError, match="no images in folder"):
        predict(tiny_checkpoint, [empty / "images"], device="cpu", quiet=True)
    line = cli_error(capsys, ["predict", str(tiny_checkpoint), str(empty / "images"), "--out", str(tmp_path / "o")])
    assert str(empty / "images") in line


# ------------------------------------------------------------------------------------------------ training

TRAIN_FLAGS = ["--dataset", "folder", "--image-size", "16", "--epochs", "1", "--batch-size", "2", "--num-vis", "1",
               "--model", "vit", "-O", "patch_size=8", "-O", "embed_size=16", "-O", "num_blocks=1", "-O", "num_heads=2"]


def _train_val_folder(root: Path, bad_writer=None) -> Path:
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(3):
            _rgb(root / split / "images" / f"s{i}.jpg", (40 * i, 100 if split == "train" else 180, 50))  # distinct
            Image.fromarray(class_mask()).save(root / split / "masks" / f"s{i}.png")
    if bad_writer is not None:
        bad_writer(root / "train" / "images" / "s1.jpg")
    (root / "classes.json").write_text(json.dumps(CLASSES))
    return root


def test_bad_training_file_stops_before_any_run_then_skip_bad_reports_it(tmp_path, capsys):
    root = _train_val_folder(tmp_path / "data", BAD_IMAGES["truncated_jpeg"][0])
    args = ["train", *TRAIN_FLAGS, "--data-root", str(root), "--train-split", "train", "--val-split", "val",
            "--out-dir", str(tmp_path / "runs"), "--run-name", "r"]
    line = cli_error(capsys, args + ["--quiet"])
    assert "s1.jpg" in line and "truncated" in line
    assert not (tmp_path / "runs").exists()  # stopped before training: no run directory
    assert cli.main(args + ["--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "left out 1 training and 0 validation file(s)" in out and "s1.jpg" in out
    assert (tmp_path / "runs" / "r" / "checkpoints" / "last.safetensors").is_file()
    # A --quiet run keeps the same record in its train.log.
    assert cli.main(args[:-1] + ["q", "--skip-bad", "--quiet"]) == 0
    log = (tmp_path / "runs" / "q" / "train.log").read_text()
    assert "left out 1 training and 0 validation file(s)" in log and "s1.jpg" in log


def test_training_decodes_nothing_after_the_cache_is_built(tmp_path, monkeypatch):
    """Every file is decoded in the cache build; once training starts no reader runs, so no file can stop it."""
    from seglab.data import folders, io as seglab_io, masks as masks_mod

    train_mod = sys.modules["seglab.train"]  # (the package's `seglab.train` is the function)

    root = _train_val_folder(tmp_path / "data")
    real = train_mod.load_datasets

    def load_then_forbid(cfg):
        datasets = real(cfg)

        def forbidden(*a, **k):
            raise AssertionError("a file was decoded during training")

        for module, name in ((seglab_io, "open_image"), (seglab_io, "read_image"), (seglab_io, "read_pair"),
                             (folders, "read_pair"), (masks_mod, "read_raw_mask")):
            monkeypatch.setattr(module, name, forbidden)
        return datasets

    monkeypatch.setattr(train_mod, "load_datasets", load_then_forbid)
    cfg = TrainConfig.from_dict(dict(
        dataset="folder", data_root=str(root), train_split="train", val_split="val", image_size=16, epochs=2,
        batch_size=2, num_vis=1, quiet=True, out_dir=str(tmp_path / "runs"),
        model_options=dict(patch_size=8, embed_size=16, num_blocks=1, num_heads=2)))
    result = train_mod.train(cfg)
    assert len(result.history) == 2


# ------------------------------------------------------------------------------------------------- helpers


def cli_error(capsys, args: list[str], one_line: bool = True) -> str:
    """Run the CLI expecting exit code 2 with one 'seglab: error:' line and no traceback; return that line.

    one_line=False allows a message that goes on over more lines (torch's own text for a refused pickle).
    """
    code = cli.main(args)
    captured = capsys.readouterr()
    assert code == 2, (captured.out, captured.err)
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert "Traceback" not in captured.err
    assert lines and lines[0].startswith("seglab: error: "), captured.err
    assert captured.err.count("seglab: error:") == 1 and (len(lines) == 1 or not one_line), captured.err
    return lines[0]


# ---------------------------------------------------------------------------------------- downloads (CLI)


@pytest.fixture
def no_retry_wait(monkeypatch):
    monkeypatch.setattr(download, "_RETRY_DELAYS", (0, 0, 0))
    monkeypatch.delenv("SEGLAB_OXFORD_PETS_URL", raising=False)


def _evil_archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in (tar_member("images/ok.txt"), tar_member("../evil.txt")):
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_data_download_cli_wrong_md5_exit_2_and_part_deleted(server, tmp_path, capsys, no_retry_wait):  # noqa: F811
    url, _ = server  # serves the tiny test archives, whose MD5s are not the official ones
    line = cli_error(capsys, ["data", "download", "oxford-pets", "--mirror", url, "--root", str(tmp_path / "p"),
                              "--quiet"])
    assert "MD5 mismatch" in line and "images.tar.gz" in line and "deleted" in line
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == []  # no partial or unverified file left


def test_data_download_cli_interrupted_then_resumed(server, archives, tmp_path, capsys, monkeypatch):  # noqa: F811
    url, state = server
    monkeypatch.setattr(oxford_pets, "ARCHIVES", md5s_of(archives))
    monkeypatch.setattr(download, "_RETRY_DELAYS", ())  # one try: the cut transfer fails the command
    state.mode = "cut"
    args = ["data", "download", "oxford-pets", "--mirror", url, "--root", str(tmp_path / "p"), "--quiet"]
    line = cli_error(capsys, args)
    assert "could not download" in line and "resumes" in line
    half = (tmp_path / "p" / "images.tar.gz.part").stat().st_size
    assert half == len(archives["images.tar.gz"]) // 2
    state.mode = "ok"
    assert cli.main(args) == 0
    assert state.for_file("images.tar.gz")[-1]["range"] == f"bytes={half}-"
    assert (tmp_path / "p" / "images.tar.gz").read_bytes() == archives["images.tar.gz"]
    assert "ready" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["503_forever", "404", "connection_refused", "bad_url", "unsafe_member", "disk_full"])
def test_data_download_cli_failures_exit_2_with_one_message(case, server, archives, tmp_path, capsys,  # noqa: F811
                                                            monkeypatch, no_retry_wait):
    url, state = server
    monkeypatch.setattr(oxford_pets, "ARCHIVES", md5s_of(archives))
    expect = {"503_forever": "after 4 tries: HTTP 503", "404": "HTTP 404", "connection_refused": "could not download",
              "bad_url": "bad download URL", "unsafe_member": "refusing to extract .*'../evil.txt'",
              "disk_full": "disk is full"}[case]
    if case == "503_forever":
        state.fail_left = 100
    elif case == "404":
        url += "/nowhere"
    elif case == "connection_refused":
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{s.getsockname()[1]}/data"  # closed again: nobody listens there
    elif case == "bad_url":
        url = "www.example.invalid/data"  # no scheme
    elif case == "unsafe_member":
        evil = _evil_archive()
        state.files["/data/images.tar.gz"] = evil
        monkeypatch.setitem(oxford_pets.ARCHIVES, "images.tar.gz", md5(evil))
    elif case == "disk_full":
        import errno

        class FullFile(io.BytesIO):
            def write(self, data) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(download, "open", lambda *a, **k: FullFile(), raising=False)
    line = cli_error(capsys, ["data", "download", "oxford-pets", "--mirror", url, "--root", str(tmp_path / "p"),
                              "--quiet"])
    assert re.search(expect, line), line
    assert not (tmp_path / "evil.txt").exists()


# ---------------------------------------------------------------------------------------------- checkpoints

TINY_RUN = ["--dataset", "synthetic", "--image-size", "16", "--train-samples", "8", "--val-samples", "4",
            "--epochs", "1", "--batch-size", "4", "--num-vis", "2", "--model", "vit", "-O", "patch_size=8",
            "-O", "embed_size=16", "-O", "num_blocks=1", "-O", "num_heads=2", "--quiet"]


SEGFORMER_RUN = ["--dataset", "synthetic", "--image-size", "16", "--train-samples", "8", "--val-samples", "4",
                 "--epochs", "1", "--batch-size", "4", "--num-vis", "2", "--model", "segformer-b0", "--quiet"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    assert cli.main(["train", *TINY_RUN, "--out-dir", str(out), "--run-name", "ok"]) == 0
    return out / "ok"


class Evil:
    """A pickle whose loading would create a file: proof that nothing was unpickled is that file's absence."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def _corrupt(kind: str, good: Path, dest: Path, marker: Path) -> Path:
    data = good.read_bytes()
    if kind == "truncated":
        dest.write_bytes(data[: len(data) // 2])
    elif kind == "header_flipped":
        flipped = bytearray(data)
        for i in range(8, 40):
            flipped[i] ^= 0x5A
        dest.write_bytes(bytes(flipped))
    elif kind == "length_flipped":
        dest.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
    elif kind == "foreign_safetensors":
        save_file({"weight": torch.zeros(3, 3)}, str(dest))
    elif kind == "pickle_renamed":
        dest.write_bytes(pickle.dumps({"weight": torch.zeros(3)}))
    elif kind == "malicious_pickle":
        dest.write_bytes(pickle.dumps(Evil(marker)))
    elif kind == "malicious_torch_save":
        torch.save(Evil(marker), dest)
    elif kind == "text":
        dest.write_text("these are not weights\n")
    else:
        raise AssertionError(kind)
    return dest


CORRUPT = ["truncated", "header_flipped", "length_flipped", "foreign_safetensors", "pickle_renamed",
           "malicious_pickle", "malicious_torch_save", "text"]


@pytest.mark.parametrize("kind", CORRUPT)
def test_corrupt_or_foreign_checkpoint_is_refused_everywhere(kind, finished_run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    bad = _corrupt(kind, finished_run / "checkpoints" / "best.safetensors", tmp_path / "bad.safetensors", marker)
    with pytest.raises(SeglabError, match="bad.safetensors"):
        read_checkpoint(bad)
    _rgb(tmp_path / "img.jpg")
    commands = {
        "eval": ["eval", str(bad), "--dataset", "synthetic", "--split", "val", "--device", "cpu", "--quiet"],
        "predict": ["predict", str(bad), str(tmp_path / "img.jpg"), "--out", str(tmp_path / "pred"), "--quiet"],
        "init-from": ["train", *TINY_RUN, "--out-dir", str(tmp_path / "runs"), "--run-name", "i", "--init-from",
                      str(bad)],
    }
    for what, args in commands.items():
        line = cli_error(capsys, args)
        assert "bad.safetensors" in line, (what, line)
    # --resume: the run's own last.safetensors is the damaged file
    run = tmp_path / "resumed"
    shutil.copytree(finished_run, run)
    shutil.copy(bad, run / "checkpoints" / "last.safetensors")
    line = cli_error(capsys, ["train", "--resume", str(run), "--epochs", "2", "--quiet"])
    assert str(run / "checkpoints" / "last.safetensors") in line
    assert not marker.exists()  # nothing was ever unpickled
    assert not (tmp_path / "pred").exists() and not (tmp_path / "runs" / "i" / "checkpoints").exists()


def test_malicious_pickle_as_hf_weights_or_any_suffix_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    for suffix in (".bin", ".pt", ".pth", ".safetensors"):
        path = tmp_path / f"evil{suffix}"
        torch.save(Evil(marker), path) if suffix != ".safetensors" else path.write_bytes(pickle.dumps(Evil(marker)))
        line = cli_error(capsys, ["train", *SEGFORMER_RUN, "--out-dir", str(tmp_path / "r"), "--run-name",
                                  suffix[1:], "--init-from", str(path)])
        assert f"evil{suffix}" in line
    for name in ("model.safetensors", "pytorch_model.bin"):  # an HF checkpoint folder
        folder = tmp_path / f"hf-{name}"
        folder.mkdir()
        (folder / name).write_bytes(pickle.dumps(Evil(marker)))
        line = cli_error(capsys, ["train", *SEGFORMER_RUN, "--out-dir", str(tmp_path / "r"), "--run-name", "f",
                                  "--init-from", str(folder)])
        assert name in line
    assert not marker.exists()


def test_malicious_yaml_config_and_cache_file_are_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(f"lr: !!python/object/apply:builtins.open ['{marker}', 'w']\n")
    line = cli_error(capsys, ["train", "--config", str(config), "--out-dir", str(tmp_path / "runs")])
    assert "evil.yaml" in line and not marker.exists()
    # A pickled object array planted in the dataset cache is not loaded: the cache is rebuilt from the source.
    cache = tmp_path / "cache"
    first = build_dataset("synthetic", "val", image_size=16, count=3, cache_dir=cache, quiet=True)
    (folder,) = [p for p in cache.iterdir() if p.is_dir()]
    np.save(folder / "images.npy", np.array([Evil(marker)], dtype=object), allow_pickle=True)
    again = build_dataset("synthetic", "val", image_size=16, count=3, cache_dir=cache, quiet=True)
    assert torch.equal(first.images, again.images) and not marker.exists()


def test_nothing_in_seglab_unpickles():
    """Static guard: torch.load only with weights_only=True, no pickle/np.load(allow_pickle=True)/yaml.load."""
    src = Path(__file__).resolve().parents[1] / "src" / "seglab"
    for path in src.rglob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            code = line.split("#")[0]
            if "torch.load(" in code:
                assert "weights_only=True" in code, f"{path}: {line.strip()}"
            assert "pickle.load" not in code and "allow_pickle=True" not in code, f"{path}: {line.strip()}"
            assert "yaml.load(" not in code and "unsafe_load" not in code, f"{path}: {line.strip()}"


def test_resume_from_a_weights_only_checkpoint_is_explained(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    shutil.copy(run / "checkpoints" / "best.safetensors", run / "checkpoints" / "last.safetensors")
    line = cli_error(capsys, ["train", "--resume", str(run), "--epochs", "2", "--quiet"])
    assert "no optimizer and scheduler state" in line and "last.safetensors" in line


_SAVER = r"""
import sys, time, torch
from torch import nn
from seglab.checkpoint import save_checkpoint
path, start = sys.argv[1], int(sys.argv[2])
module = nn.Module()
module.register_buffer("w", torch.zeros(8_000_000))  # 32 MB: a save takes long enough to be killed inside
for i in range(start, start + 10_000):
    module.w.fill_(i)
    print(i, flush=True)
    save_checkpoint(path, module, {"model": {"name": "vit", "num_classes": 3, "image_size": 16}, "counter": i})
"""


def _check_consistent(path: Path) -> int:
    tensors, header = read_checkpoint(path)
    counter = header["counter"]
    assert torch.all(tensors["w"] == counter)  # the data and the header are from the same save
    return counter


def test_sigkill_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "last.safetensors"
    script = tmp_path / "saver.py"
    script.write_text(_SAVER)
    rnd = random.Random(1234)
    start, last_seen = 0, -1
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, str(script), str(ckpt), str(start)], stdout=subprocess.PIPE,
                                text=True)
        # Wait until it has begun its second save (so a complete first one exists), then kill it at a random moment.
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert all(lines), "the saver died"
        time.sleep(rnd.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        counter = _check_consistent(ckpt)
        assert counter >= start and counter > last_seen  # a complete save from this process
        last_seen, start = counter, counter + 1_000
        # A temporary file a kill may leave is never taken for the checkpoint.
        assert _check_consistent(ckpt.parent.parent) == counter
    # The next save removes whatever temporary files the kills left.
    module = torch.nn.Module()
    module.register_buffer("w", torch.full((4,), 7.0))
    save_checkpoint(ckpt, module, {"model": {"name": "vit", "num_classes": 3, "image_size": 16}, "counter": 7})
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last.safetensors"]
    assert _check_consistent(ckpt) == 7


def test_sigkill_in_the_middle_of_a_write_is_deterministic(tmp_path):
    """A writer killed after writing half of the new file: the old file stays whole, the torn temp is cleaned."""
    target = tmp_path / "file.bin"
    target.write_bytes(b"old contents")
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from seglab.checkpoint import atomic_write\n"
        "def write(tmp):\n"
        "    Path(tmp).write_bytes(b'half of the new')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        f"atomic_write(Path({str(target)!r}), write)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old contents"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".file.bin.")
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"new"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"] and target.read_bytes() == b"new"


def test_a_temp_file_being_written_by_another_process_is_not_removed(tmp_path):
    target = tmp_path / "file.bin"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from seglab.checkpoint import atomic_write\n"
        "def write(tmp):\n"
        "    Path(tmp).write_bytes(b'slow')\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(2)\n"
        f"atomic_write(Path({str(target)!r}), write)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        atomic_write(tmp_path / "file.bin", lambda tmp: Path(tmp).write_bytes(b"mine"))  # cleans stale temps only
        assert len([p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]) == 1  # theirs, locked, kept
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == 0 and target.read_bytes() == b"slow"


# ------------------------------------------------------------------------------------------ non-finite loss


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    train_mod = sys.modules["seglab.train"]
    real = train_mod.augment_batch
    calls = {"n": 0}

    def poisoned(images, masks, *args, **kwargs):  # epoch 2, step 2 gets a NaN batch
        calls["n"] += 1
        x, y = real(images, masks, *args, **kwargs)
        return (torch.full_like(x, float("nan")) if calls["n"] == 5 else x), y

    monkeypatch.setattr(train_mod, "augment_batch", poisoned)
    run = tmp_path / "runs" / "nan"
    flags = ["--dataset", "synthetic", "--image-size", "16", "--train-samples", "12", "--val-samples", "4",
             "--epochs", "3", "--batch-size", "4", "--num-vis", "2", "--model", "vit", "-O", "patch_size=8",
             "-O", "embed_size=16", "-O", "num_blocks=1", "-O", "num_heads=2", "--quiet"]
    line = cli_error(capsys, ["train", *flags, "--out-dir", str(tmp_path / "runs"), "--run-name", "nan"])
    assert "non-finite at epoch 2, step 2" in line and str(run / "checkpoints" / "last.safetensors") in line
    tensors, header = read_checkpoint(run / "checkpoints" / "last.safetensors")
    assert header["epoch"] == 1  # the last good epoch's checkpoint, whole
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if v.is_floating_point())
    # ... and the run can go on from it.
    monkeypatch.setattr(train_mod, "augment_batch", real)
    assert cli.main(["train", "--resume", str(run), "--quiet"]) == 0


def test_huge_learning_rate_stops_cleanly(tmp_path, capsys):
    flags = ["--dataset", "synthetic", "--image-size", "16", "--train-samples", "8", "--val-samples", "4",
             "--epochs", "2", "--batch-size", "4", "--num-vis", "2", "--model", "vit", "-O", "patch_size=8",
             "-O", "embed_size=16", "-O", "num_blocks=1", "-O", "num_heads=2", "--lr", "1e30", "--optimizer", "sgd",
             "--momentum", "0", "--quiet", "--out-dir", str(tmp_path / "runs"), "--run-name", "big"]
    line = cli_error(capsys, ["train", *flags])
    assert "non-finite at epoch" in line and "step" in line and "lower --lr" in line


# ------------------------------------------------------------------------------------------- configuration


BAD_OPTIONS = [
    (["--lr", "-1"], "lr"),
    (["--lr", "nan"], "lr"),
    (["--lr", "inf"], "lr"),
    (["--epochs", "0"], "epochs"),
    (["--image-size", "100"], "image_size 100 is not divisible by patch_size 16"),
    (["-O", "embed_size=64", "-O", "num_heads=128"], "embed_size 64 is not divisible by num_heads 128"),
    (["-O", "num_heads=0"], "num_heads"),
    (["-O", "nonsense=1"], "nonsense"),
    (["-O", "embed_size=wide"], "embed_size"),
    (["-O", "depth=[1"], "--model-option"),
    (["--model", "vit-huge"], "vit-huge"),
    (["--dataset", "imagenet"], "dataset"),
    (["--interpolation", "cubic"], "interpolation"),
    (["--hflip", "2"], "hflip"),
    (["--label-smoothing", "1.5"], "label_smoothing"),
    (["--seed", "-1"], "seed"),
    (["--run-name", ".."], "run_name"),
    (["--scheduler", "onecycle", "--epochs", "2", "--warmup-epochs", "5"], "warmup_epochs"),
]


@pytest.mark.parametrize("flags, fragment", BAD_OPTIONS, ids=[" ".join(f) for f, _ in BAD_OPTIONS])
def test_bad_command_line_options_fail_before_any_work(flags, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SEGLAB_DATA", str(tmp_path / "data"))
    line = cli_error(capsys, ["train", "--dataset", "synthetic", *flags, "--out-dir", str(tmp_path / "runs")])
    assert fragment in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()  # no run, no cache


BAD_FILES = [
    ("nonsense: 1\n", "unknown key(s) nonsense"),
    ("lr: fast\n", "lr must be a number"),
    ("epochs: 2.5\n", "epochs must be an integer"),
    ("model_options: 3\n", "model_options must be a mapping"),
    ("lr: -0.1\n", "lr"),
    ("epochs: 0\n", "epochs"),
    ("image_size: 100\n", "not divisible by patch_size"),
    ("model_options: {embed_size: 64, num_heads: 5}\n", "not divisible by num_heads"),
    ("- just\n- a list\n", "mapping"),
    ("lr: [unclosed\n", "not valid YAML"),
]


@pytest.mark.parametrize("text, fragment", BAD_FILES, ids=[t.strip() for t, _ in BAD_FILES])
def test_bad_config_files_fail_before_any_work(text, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SEGLAB_DATA", str(tmp_path / "data"))
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    line = cli_error(capsys, ["train", "--config", str(config), "--out-dir", str(tmp_path / "runs")])
    assert fragment in line and "bad.yaml" in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_a_directly_built_config_is_checked_too(tmp_path, monkeypatch):
    from seglab.train import train

    monkeypatch.setenv("SEGLAB_DATA", str(tmp_path / "data"))
    for cfg, fragment in ((TrainConfig(dataset="synthetic", epochs="5"), "epochs must be an integer"),  # type: ignore[arg-type]
                          (TrainConfig(dataset="synthetic", lr=float("inf")), "lr"),
                          (TrainConfig(dataset="synthetic", model_options={"num_heads": 7}), "num_heads 7"),
                          (TrainConfig(dataset="synthetic", run_name=""), "run_name")):
        with pytest.raises(SeglabError, match=fragment):
            train(cfg)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_on_the_meta_device_for_validation(name):
    """TrainConfig.validate builds the model on the meta device; a model that cannot would always be refused."""
    TrainConfig.from_dict({"model": name})


def test_eval_and_predict_reject_a_zero_batch_size(finished_run, tmp_path, capsys):
    for args in (["eval", str(finished_run), "--dataset", "synthetic", "--batch-size", "0"],
                 ["predict", str(finished_run), str(tmp_path), "--out", str(tmp_path / "o"), "--batch-size", "0"]):
        with pytest.raises(SystemExit) as info:
            cli.main(args)
        assert info.value.code == 2 and "--batch-size" in capsys.readouterr().err


def test_file_system_errors_are_one_message(finished_run, tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should go")
    _rgb(tmp_path / "img.jpg")
    line = cli_error(capsys, ["predict", str(finished_run), str(tmp_path / "img.jpg"), "--out", str(blocker / "x")])
    assert "not-a-folder" in line
    line = cli_error(capsys, ["train", *TINY_RUN, "--out-dir", str(blocker), "--run-name", "r"])
    assert "not-a-folder" in line


def test_eval_cli_bad_file_exit_2_then_skip_bad_lists_it(finished_run, tmp_path, capsys):
    root = make_root("folder", tmp_path / "data", BAD_IMAGES["text_named_jpg"][0])
    args = ["eval", str(finished_run), "--dataset", "folder", "--data-root", str(root), "--split", "all",
            "--device", "cpu", "--quiet"]
    line = cli_error(capsys, args)
    assert f"{CASE}.jpg" in line and "not an image" in line
    assert cli.main(args + ["--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "(1 images" in out and "skipped 1 bad file(s)" in out and f"{CASE}.jpg" in out


def test_a_full_disk_while_saving_keeps_the_old_checkpoint(tmp_path):
    import errno

    target = tmp_path / "last.safetensors"
    target.write_bytes(b"the previous checkpoint")

    def full(tmp: Path) -> None:
        tmp.write_bytes(b"part of it")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(SeglabError, match="disk full while writing .*last.safetensors"):
        atomic_write(target, full)
    assert target.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]  # no temporary file left


def test_hidden_macos_resource_files_are_not_taken_for_images(tmp_path, tiny_checkpoint):
    root = make_root("folder", tmp_path / "data")
    (root / "images" / "._good.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (root / "masks" / "._good.png").write_bytes(b"\x00\x05\x16\x07")
    assert sorted(load("folder", root, tmp_path / "a").images) == ["good", CASE]
    res = predict(tiny_checkpoint, [root / "images"], device="cpu", quiet=True)
    assert sorted(p.path.name for p in res) == ["good.jpg", f"{CASE}.jpg"]


def test_flipped_bytes_in_checkpoint_data_are_detected(tmp_path, capsys):
    from seglab.checkpoint import read_checkpoint, save_checkpoint
    from seglab.models import build_model

    torch.manual_seed(0)
    model = build_model("vit", image_size=32, embed_size=16, num_blocks=1, num_heads=2, patch_size=8)
    path = tmp_path / "w.safetensors"
    save_checkpoint(path, model, {"model": model.seglab_spec, "epoch": 1, "image_size": 32})
    read_checkpoint(path)  # intact: loads
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40  # a bit in the last tensor's bytes, past the header
    path.write_bytes(bytes(data))
    with pytest.raises(SeglabError, match="CRC32"):
        read_checkpoint(path)
    assert "CRC32" in cli_error(capsys, ["eval", str(path), "--dataset", "synthetic", "--quiet"])
