"""Regression tests of the four bugs found while cleaning up the stack (issue 16); each failed before its fix."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab import cli
from seglab.compare import read_run, validation_split
from seglab.config import RECIPES, TrainConfig
from seglab.errors import SeglabError
from seglab.run import RunDir
from seglab.train import train

IGNORE = 7  # a folder dataset whose masks mark "ignore" with 7, not 255


def _folder(root: Path, n: int = 8, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[: size // 2] = 1
        mask[:4] = IGNORE
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return root


def test_compare_reads_a_folder_runs_masks_as_the_run_did(tmp_path):
    data = _folder(tmp_path / "data")
    cfg = TrainConfig.from_dict(dict(model="segnet-dsc-head", model_options=dict(widths=[8, 16], depths=[1, 1]),
                                     dataset="folder", data_root=str(data), ignore_index=IGNORE, image_size=32,
                                     epochs=1, batch_size=4, eval_batch_size=4, num_vis=0, quiet=True,
                                     out_dir=str(tmp_path / "runs"), run_name="r"))
    run_dir = train(cfg).run_dir
    run = read_run(run_dir)
    assert run.config["ignore_index"] == IGNORE
    assert run.config["masks"] == RunDir(run_dir).read_config()["masks"] != {}
    val = validation_split(run)
    assert val.num_classes == 2  # read with the default ignore value, 7 would be a third class
    assert set(np.unique(val.masks.numpy())) == {0, 1, 255}


def test_train_help_states_the_finetune_recipes_encoder_lr_ratio(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "-h"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"(finetune: {RECIPES['finetune']['encoder_lr_ratio']})" in help_text
    assert "(finetune: 0.1)" not in help_text


def test_metrics_csv_is_rewritten_atomically(tmp_path, monkeypatch):
    run = RunDir(tmp_path)
    run.write_metrics([{"epoch": 1, "miou": 0.5}])
    before = run.metrics_path.read_bytes()

    class Boom(csv.DictWriter):
        def writerows(self, rows):
            super().writerows(rows[:1])
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(csv, "DictWriter", Boom)
    with pytest.raises(SeglabError, match="metrics.csv"):
        run.write_metrics([{"epoch": 1, "miou": 0.5}, {"epoch": 2, "miou": 0.6}])
    assert run.metrics_path.read_bytes() == before  # the previous file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # no temporary left behind
