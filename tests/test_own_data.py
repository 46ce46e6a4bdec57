"""A user's own data end to end through the CLI: detection line, config.yaml record, pre-flight refusals, losses,
confusion matrices, `seglab data inspect` and `seglab data download voc`."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from seglab import cli
from seglab.checkpoint import read_checkpoint
from seglab.data import download, voc
from helpers import grey, make, mask_ids
from test_reliability import cli_error
from test_voc import VAL, voc_server  # noqa: F401

TINY = ["--model", "vit", "-O", "patch_size=8", "-O", "embed_size=16", "-O", "num_blocks=1", "-O", "num_heads=2",
        "--image-size", "16", "--epochs", "1", "--batch-size", "4", "--num-vis", "1", "--quiet"]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEGLAB_DATA", str(tmp_path / "seglab-data"))
    monkeypatch.chdir(tmp_path)


def train(root: Path, *extra: str, name: str = "r") -> Path:
    assert cli.main(["train", "--dataset", "folder", "--data-root", str(root), *TINY, "--out-dir", "runs",
                     "--run-name", name, *extra]) == 0
    return Path("runs") / name


def test_binary_0_255_folder_trains_two_classes_with_no_split_flags(tmp_path: Path, capsys) -> None:
    root = make(tmp_path / "bin", 15, grey({1: 255}))
    run = train(root)
    assert capsys.readouterr().out.startswith("masks: binary 0/255 -> background, foreground; train pixels ")
    log = (run / "train.log").read_text().splitlines()
    assert log[0].startswith("masks: binary 0/255 -> background, foreground; train pixels ")
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    for col in ("iou_background", "iou_foreground", "dice_background", "dice_foreground"):
        assert float(rows[0][col]) == float(rows[0][col])  # both classes occur in val: defined, not NaN
    _, header = read_checkpoint(run / "checkpoints" / "last.safetensors")
    assert header["model"]["num_classes"] == 2 and header["class_names"] == ["background", "foreground"]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert (cfg["train_split"], cfg["val_split"]) == ("train", "val")
    assert cfg["masks"]["kind"] == "binary" and cfg["masks"]["values"] == {"0": 0, "255": 1}
    rows = list(csv.reader(open(run / "confusion.csv")))
    assert rows[0] == ["truth \\ predicted", "background", "foreground"] and len(rows) == 3
    assert (run / "figures" / "confusion.png").is_file()
    capsys.readouterr()

    # A repeat from config.yaml reads the masks as recorded, even when a new mask would change the detection.
    Image.fromarray(np.full((24, 32), 7, np.uint8)).save(root / "masks" / "im000.png")
    line = cli_error(capsys, ["train", "--config", str(run / "config.yaml"), "--run-name", "again", "--quiet"])
    assert "value(s) 7" in line and "im000.png" in line
    Image.fromarray(mask_ids(0) * 255).save(root / "masks" / "im000.png")

    # seglab eval of the run: the run's dataset, split and mask format; per-class Dice; the confusion matrix.
    assert cli.main(["eval", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "masks: binary 0/255 -> background, foreground; val pixels" in out
    assert "iou_foreground" in out and "dice" in out
    assert (run / "eval" / "folder-val" / "confusion.csv").is_file()
    assert (run / "eval" / "folder-val" / "figures" / "confusion.png").is_file()


def test_jpeg_01_palette_and_colour_folders_train(tmp_path: Path) -> None:
    jpeg = make(tmp_path / "jpeg", 12, grey({1: 255}, fmt="JPEG", quality=80), suffix=".jpg")
    assert "JPEG" in (train(jpeg, name="j") / "train.log").read_text().splitlines()[0]
    colours = [[0, 0, 0], [255, 0, 0], [0, 128, 255]]
    classes = [{"name": n, "color": c} for n, c in zip(("bg", "cat", "dog"), colours)]
    colour = make(tmp_path / "colour", 12, lambda p, i: Image.fromarray(np.array(colours, np.uint8)[mask_ids(i, 3)])
                  .save(p), classes=classes)
    first = (train(colour, "--loss", "ce+dice", "--class-weights", "auto", name="c") / "train.log").read_text()
    assert first.startswith("masks: RGB colours from classes.json -> bg, cat, dog; train pixels")


def test_refusals_exit_2_with_one_message(tmp_path: Path, capsys) -> None:
    one = make(tmp_path / "one", 6, lambda p, i: Image.fromarray(np.zeros((24, 32), np.uint8)).save(p))
    args = ["train", "--dataset", "folder", *TINY, "--out-dir", "runs"]
    line = cli_error(capsys, [*args, "--data-root", str(one)])
    assert "only 1 class(es) (class0) occur in the training masks" in line
    assert not Path("runs").exists()

    def mostly(p: Path, i: int) -> None:
        m = mask_ids(i, 3)
        m[:18] = 255
        Image.fromarray(m).save(p)
    line = cli_error(capsys, [*args, "--data-root", str(make(tmp_path / "ign", 8, mostly))])
    assert "of the training pixels" in line and "are ignore" in line and "more than half" in line

    same = make(tmp_path / "same", 4, grey(), split="train")
    make(same, 4, grey(), split="val")
    line = cli_error(capsys, [*args, "--data-root", str(same)])
    assert "the validation split 'val' shares 4 file(s) with the training split 'train'" in line

    ok = make(tmp_path / "ok", 8, grey())
    line = cli_error(capsys, [*args, "--data-root", str(ok), "--class-weights", "1,2,3"])
    assert "class_weights has 3 values" in line
    line = cli_error(capsys, [*args, "--data-root", str(ok), "--class-weights", "heavy"])
    assert "class_weights" in line and "w0,w1" in line
    line = cli_error(capsys, [*args, "--data-root", str(ok), "--loss", "hinge"])
    assert "loss" in line and "ce, dice, focal, jaccard, ce+dice" in line

    def noisy(p: Path, i: int) -> None:
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (24, 32), np.uint8)).save(p, format="JPEG")
    line = cli_error(capsys, [*args, "--data-root", str(make(tmp_path / "noisy", 4, noisy, suffix=".jpg"))])
    assert "JPEG (lossy)" in line and "PNG" in line


def test_class_never_in_training_is_warned_once(tmp_path: Path) -> None:
    root = make(tmp_path / "d", 10, grey(k=2), classes=["sky", "sea", "ship"])
    log = (train(root) / "train.log").read_text()
    assert log.count("warning: class(es) ship never occur in the training masks") == 1
    assert "ship n/a (absent)" in log


def test_data_inspect_cli_strict_and_preview(tmp_path: Path, capsys) -> None:
    root = make(tmp_path / "d", 10, grey({1: 255}))
    assert cli.main(["data", "inspect", str(root), "--out", "insp", "--strict", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "masks: binary 0/255 -> background, foreground" in out and "problems: none" in out
    assert Image.open("insp/preview.png").size[0] > 0
    assert json.loads(Path("insp/report.json").read_text())["problems"] == []
    Image.new("RGB", (8, 8)).save(root / "images" / "lonely.png")
    assert cli.main(["data", "inspect", str(root), "--out", "insp", "--quiet"]) == 0  # not strict: reports only
    assert cli.main(["data", "inspect", str(root), "--out", "insp", "--strict", "--quiet"]) == 1
    assert "lonely.png" in capsys.readouterr().out
    assert "no folder" in cli_error(capsys, ["data", "inspect", str(tmp_path / "nowhere")])
    assert "seglab data download voc" in cli_error(capsys, ["data", "inspect", "voc", "--quiet"])


def test_data_download_voc_cli(voc_server, tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: F811
    url, state, body = voc_server
    monkeypatch.setattr(download, "_RETRY_DELAYS", (0, 0, 0))
    monkeypatch.setattr(voc, "ARCHIVE_MD5", hashlib.md5(body).hexdigest())
    assert cli.main(["data", "download", "voc", "--mirror", url, "--root", "v", "--quiet"]) == 0
    assert "voc is ready in v" in capsys.readouterr().out
    assert cli.main(["train", "--dataset", "voc", "--data-root", "v", *TINY, "--out-dir", "runs", "--run-name",
                     "voc"]) == 0
    log = Path("runs/voc/train.log").read_text()
    assert "masks: palette PNGs, index = class id (VOC 2012) (255 = ignore) -> background, aeroplane" in log
    assert "warning: class(es) " in log  # the tiny VOC has 2 of the 21 classes in training
    monkeypatch.setattr(voc, "ARCHIVE_MD5", "0" * 32)
    assert "MD5 mismatch" in cli_error(capsys, ["data", "download", "voc", "--mirror", url, "--root", "w", "--quiet"])
    assert VAL
