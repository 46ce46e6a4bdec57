"""Training end to end on tiny synthetic data: files written, determinism, resume, config repeat, DDP, CLI."""

import csv
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from seglab import cli
from seglab.checkpoint import read_checkpoint
from seglab.config import TrainConfig
from seglab.errors import SeglabError
from seglab.train import train

TINY = dict(model="vit", dataset="synthetic", image_size=32, train_samples=24, val_samples=10, epochs=2, batch_size=8,
            eval_batch_size=8, lr=2e-3, num_vis=7, quiet=True,
            model_options=dict(patch_size=8, embed_size=32, num_blocks=1, num_heads=2, dropout=0.1))


def tiny(tmp_path: Path, **kw) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, "out_dir": str(tmp_path / "runs"), **kw})


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_run_writes_every_file(tmp_path):
    result = train(tiny(tmp_path, run_name="r"))
    run = result.run_dir
    assert run == tmp_path / "runs" / "r"
    for name in ["config.yaml", "metrics.csv", "train.log", "checkpoints/last.safetensors",
                 "checkpoints/best.safetensors", "figures/epoch_001.png", "figures/epoch_002.png",
                 "figures/progress.gif", "figures/curves.png"]:
        assert (run / name).is_file(), name
    r = rows(run)
    assert [int(x["epoch"]) for x in r] == [1, 2]
    for col in ["train_loss", "val_loss", "pixel_accuracy", "article_iou", "miou", "iou_pet", "iou_background",
                "iou_border", "lr", "seconds", "images_per_s"]:
        assert col in r[0]
    assert 0.0 <= float(r[-1]["pixel_accuracy"]) <= 1.0
    _, header = read_checkpoint(run / "checkpoints" / "last.safetensors")
    assert header["epoch"] == 2 and header["model"]["name"] == "vit"
    assert header["class_names"] == ["pet", "background", "border"]
    # The progress GIF holds one frame per epoch.
    from PIL import Image

    with Image.open(run / "figures" / "progress.gif") as gif:
        assert gif.n_frames == 2


def test_num_vis_zero_trains_without_figures_of_predictions(tmp_path):
    run = train(tiny(tmp_path, run_name="r", num_vis=0, epochs=1)).run_dir
    assert (run / "checkpoints" / "best.safetensors").is_file() and (run / "figures" / "curves.png").is_file()
    assert not list((run / "figures").glob("epoch_*.png")) and not (run / "figures" / "progress.gif").exists()


def test_same_seed_same_metrics(tmp_path):
    a = train(tiny(tmp_path, run_name="a"))
    b = train(tiny(tmp_path, run_name="b"))
    assert rows(a.run_dir)[-1]["val_loss"] == rows(b.run_dir)[-1]["val_loss"]
    wa = load_file(a.run_dir / "checkpoints" / "last.safetensors")
    wb = load_file(b.run_dir / "checkpoints" / "last.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_matches_uninterrupted(tmp_path):
    full = train(tiny(tmp_path, run_name="full", epochs=3, scheduler="step", step_size=1, gamma=0.5))
    part = train(tiny(tmp_path, run_name="part", epochs=2, scheduler="step", step_size=1, gamma=0.5))
    # Continue the stopped run to 3 epochs: the last epoch must replay exactly.
    resumed = train(dataclasses.replace(part_cfg := tiny(tmp_path, epochs=3), quiet=True), resume=part.run_dir)
    assert part_cfg.epochs == 3
    key = ["epoch", "train_loss", "val_loss", "pixel_accuracy", "miou", "lr"]
    assert ([{k: r[k] for k in key} for r in rows(resumed.run_dir)]
            == [{k: r[k] for k in key} for r in rows(full.run_dir)])


ORIGINAL_PROTOCOL = ["--protocol", "original", "--crop-size", "24", "--scale-range", "0.5,1.5", "--cat-max-ratio",
                     "0.9", "--hue", "0.05", "--vflip", "0.5", "--rot90", "0.5", "--blur", "0.3"]


@pytest.mark.parametrize("data_path", [[], ORIGINAL_PROTOCOL], ids=["article", "original-crops-augmentations"])
def test_resume_after_sigkill(tmp_path, data_path):
    """A real process killed with SIGKILL mid-run, resumed from the command line, ends like an uninterrupted run;
    also with crops of images at their own size and the augmentations beyond the article's."""
    args = ["train", "--dataset", "synthetic", "--image-size", "32", "--train-samples", "96", "--val-samples", "8",
            "--epochs", "4", "--batch-size", "8", "--lr", "0.002", "--num-vis", "4", "--quiet",
            "-O", "patch_size=8", "-O", "embed_size=32", "-O", "num_blocks=1", "-O", "num_heads=2",
            "--out-dir", str(tmp_path / "runs"), *data_path]
    assert cli.main(args + ["--run-name", "full"]) == 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "seglab.cli", *args, "--run-name", "killed"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    csv_path = tmp_path / "runs" / "killed" / "metrics.csv"
    last = tmp_path / "runs" / "killed" / "checkpoints" / "last.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last.exists():  # killed after the first checkpoint, somewhere in a later epoch
            break
        time.sleep(0.02)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed, "the run ended before it could be killed; make it longer"
    assert len(rows(csv_path.parent)) < 4
    assert cli.main(["train", "--resume", str(tmp_path / "runs" / "killed"), "--quiet"]) == 0
    assert rows(tmp_path / "runs" / "killed") == [
        {k: v for k, v in r.items() if k not in ("seconds", "images_per_s")}
        | {"seconds": r2["seconds"], "images_per_s": r2["images_per_s"]}
        for r, r2 in zip(rows(tmp_path / "runs" / "full"), rows(tmp_path / "runs" / "killed"))
    ]


def test_config_yaml_repeats_a_run(tmp_path, capsys):
    first = train(tiny(tmp_path, run_name="one"))
    assert cli.main(["train", "--config", str(first.run_dir / "config.yaml"), "--run-name", "two"]) == 0
    a, b = rows(first.run_dir), rows(tmp_path / "runs" / "two")
    assert [r["val_loss"] for r in a] == [r["val_loss"] for r in b]


def test_cli_flags_reach_the_config(tmp_path):
    args = cli.build_parser().parse_args(["train", "--lr", "0.01", "--no-download", "--batch-size", "16",
                                          "--recipe", "segnet-part2", "-O", "embed_size=64"])
    cfg = cli._config_from_args(args)
    assert (cfg.lr, cfg.batch_size, cfg.step_size, cfg.gamma, cfg.epochs) == (0.01, 16, 7, 0.7, 20)
    assert cfg.model_options == {"embed_size": 64}
    default = cli._config_from_args(cli.build_parser().parse_args(["train"]))
    # The article's recipe is the default.
    assert (default.batch_size, default.lr, default.optimizer, default.step_size, default.gamma, default.epochs,
            default.hflip, default.contrast, default.interpolation, default.train_split, default.val_split) == (
        64, 4e-4, "adam", 12, 0.8, 50, 0.5, 0.3, "nearest", None, None)  # splits: the dataset's own


@pytest.mark.parametrize("values, field", [
    ({"lr": -1.0}, "lr"), ({"epochs": 0}, "epochs"), ({"optimizer": "adamax"}, "optimizer"),
    ({"nonsense": 1}, "nonsense"), ({"batch_size": "big"}, "batch_size"),
])
def test_bad_config_is_rejected(values, field):
    with pytest.raises(SeglabError, match=field):
        TrainConfig.from_dict(values)


def test_bad_model_option_fails_before_work(tmp_path, capsys):
    code = cli.main(["train", "--dataset", "synthetic", "--image-size", "30", "--out-dir", str(tmp_path)])
    assert code == 2
    assert "not divisible by patch_size" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_eval_and_predict_cli(tmp_path, capsys):
    from PIL import Image

    run = train(tiny(tmp_path, run_name="ev")).run_dir
    assert cli.main(["eval", str(run), "--dataset", "synthetic", "--split", "val", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "pixel_accuracy" in out and "miou" in out and "iou_border" in out
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    Image.new("RGB", (57, 41), (200, 10, 10)).save(img_dir / "a.jpg")
    Image.new("L", (20, 90), 100).save(img_dir / "b.png")
    assert cli.main(["predict", str(run / "checkpoints" / "best.safetensors"), str(img_dir), "--out",
                     str(tmp_path / "pred"), "--quiet"]) == 0
    for stem, size in (("a", (57, 41)), ("b", (20, 90))):
        mask = Image.open(tmp_path / "pred" / f"{stem}_mask.png")
        assert mask.size == size and mask.mode == "L"
        assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 1, 2}
        assert Image.open(tmp_path / "pred" / f"{stem}_overlay.png").size == size


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_end_identical(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(f"""
import os, torch
from safetensors.torch import save_file
from seglab.config import TrainConfig
from seglab.train import train
cfg = TrainConfig.from_dict({{**{TINY!r}, "out_dir": {str(tmp_path / 'runs')!r}, "run_name": "ddp"}})
res = train(cfg)
rank = int(os.environ["RANK"])
state = {{k: v.contiguous() for k, v in res.model.state_dict().items()}}
save_file(state, {str(tmp_path)!r} + f"/rank{{rank}}.safetensors")
with open({str(tmp_path)!r} + f"/metrics{{rank}}.txt", "w") as f:
    f.write(repr(res.metrics["pixel_accuracy"]))
torch.distributed.destroy_process_group()
""")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    w0 = load_file(tmp_path / "rank0.safetensors")
    w1 = load_file(tmp_path / "rank1.safetensors")
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert (tmp_path / "metrics0.txt").read_text() == (tmp_path / "metrics1.txt").read_text()
    # Rank 0 alone wrote the run directory.
    run = tmp_path / "runs" / "ddp"
    assert len(rows(run)) == 2 and (run / "checkpoints" / "last.safetensors").exists()
