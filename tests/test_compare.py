"""compare_runs on tiny runs made by seglab's own train() on the synthetic dataset: the table's numbers come from
each run's metrics, the predictions figure shows each run's best checkpoint on the same images, runs on other data
or classes are refused, and a run in progress is compared as far as it got."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from seglab.checkpoint import load_model
from seglab.compare import compare_runs, read_run
from seglab.config import TrainConfig
from seglab.data import build_dataset
from seglab.errors import SeglabError
from seglab.train import train
from seglab.viz import colorize

BASE = dict(dataset="synthetic", image_size=32, train_samples=16, val_samples=8, epochs=2, batch_size=8,
            eval_batch_size=8, lr=2e-3, num_vis=7, quiet=True)
VIT = dict(model="vit", model_options=dict(patch_size=8, embed_size=32, num_blocks=1, num_heads=2, dropout=0.0))
CNN = dict(model="segnet-dsc-head", model_options=dict(widths=[8, 16], depths=[1, 1]), optimizer="adamw")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    out = []
    for name, kw in (("vit", VIT), ("cnn", CNN)):
        cfg = TrainConfig.from_dict({**BASE, **kw, "out_dir": str(root / "runs"), "run_name": name})
        out.append(train(cfg).run_dir)
    return out


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_table_comes_from_each_runs_metrics(runs, tmp_path):
    result = compare_runs(runs, tmp_path / "cmp")
    assert {p.name for p in (tmp_path / "cmp").iterdir()} == {"compare.md", "compare.csv", "curves.png",
                                                              "predictions.png"}
    table = _csv(tmp_path / "cmp" / "compare.csv")
    assert [r["model"] for r in table] == ["vit", "segnet-dsc-head"]
    for run, row in zip(runs, table):
        metrics = _csv(run / "metrics.csv")
        assert float(row["last_pixel_accuracy"]) == pytest.approx(float(metrics[-1]["pixel_accuracy"]))
        assert float(row["best_pixel_accuracy"]) == pytest.approx(max(float(m["pixel_accuracy"]) for m in metrics))
        assert float(row["miou"]) == pytest.approx(float(metrics[-1]["miou"]))
        assert float(row["iou_border"]) == pytest.approx(float(metrics[-1]["iou_border"]))
        assert float(row["train_minutes"]) == pytest.approx(sum(float(m["seconds"]) for m in metrics) / 60)
        model, _ = load_model(run)
        assert int(row["parameters"]) == sum(p.numel() for p in model.parameters())
        assert row["epochs"] == "2 epochs" and row["device"] == "cpu" and row["recipe"] == "article"
        assert row["weights"] == "random"
    md = result.markdown.splitlines()
    assert "article IoU" in md[0] and "IoU pet" in md[0] and md[2].startswith("| vit |") and md[4] == ""
    assert md[-1].startswith("- cnn: `seglab train --model segnet-dsc-head --recipe article --dataset synthetic")


def test_predictions_figure_shows_each_best_checkpoint_on_the_same_images(runs, tmp_path):
    compare_runs(runs, tmp_path, num_images=7)
    fig = np.asarray(Image.open(tmp_path / "predictions.png").convert("RGB"))
    ds = build_dataset("synthetic", "val", image_size=32, count=8, seed=0, quiet=True)
    scale, pad, label = 3, 2, 16  # 32-pixel tiles enlarged to 96; 2-pixel gaps; a 16-pixel label over each panel
    panel_h = label + pad + (32 * scale + pad)
    assert fig.shape[0] == 4 * panel_h  # images, truth, run 1, run 2
    expected = [colorize(m, 3) for m in ds.masks[:7]]
    for run_i, run in enumerate(runs):
        model, _ = load_model(run)
        with torch.inference_mode():
            pred = model(ds.images[:7].float() / 255).argmax(1)
        expected_panel = [colorize(p, 3) for p in pred]
        for panel, tiles in ((1, expected), (2 + run_i, expected_panel)):
            for i, tile in enumerate(tiles):
                y = panel * panel_h + label + pad
                x = pad + i * (32 * scale + pad)
                got = fig[y:y + 32 * scale:scale, x:x + 32 * scale:scale]
                assert np.array_equal(got, tile), (panel, i)


def test_other_data_or_classes_are_refused_naming_the_runs(runs, tmp_path):
    other = tmp_path / "other-seed"
    shutil.copytree(runs[0], other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["seed"] = 5  # synthetic data is generated from the seed: another validation set
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SeglabError, match="different datasets") as e:
        compare_runs([runs[0], other], tmp_path / "o")
    assert str(runs[0]) in str(e.value) and str(other) in str(e.value) and "seed 5" in str(e.value)
    classes = tmp_path / "other-classes"
    shutil.copytree(runs[1], classes)
    text = (classes / "metrics.csv").read_text().replace("iou_border", "iou_edge")
    (classes / "metrics.csv").write_text(text)
    with pytest.raises(SeglabError, match="different class sets") as e:
        compare_runs([runs[0], classes], tmp_path / "o")
    assert str(classes) in str(e.value) and "edge" in str(e.value)
    with pytest.raises(SeglabError, match="not a run directory"):
        compare_runs([runs[0], tmp_path], tmp_path / "o")


def test_a_run_in_progress_is_compared_as_far_as_it_got(runs, tmp_path):
    going = tmp_path / "going"
    shutil.copytree(runs[0], going)
    cfg = yaml.safe_load((going / "config.yaml").read_text())
    cfg["epochs"] = 6
    (going / "config.yaml").write_text(yaml.safe_dump(cfg))
    fresh = tmp_path / "fresh"  # started, no epoch finished: no metrics, no checkpoint yet
    fresh.mkdir()
    shutil.copy(going / "config.yaml", fresh / "config.yaml")
    result = compare_runs([runs[1], going, fresh], tmp_path / "c")
    by_run = {r["run"]: r for r in result.rows}
    assert by_run["going"]["epochs"] == "in progress: 2/6 epochs" and by_run["going"]["in_progress"]
    assert by_run["fresh"]["epochs"].startswith("in progress: no epoch") and np.isnan(by_run["fresh"]["miou"])
    assert "| going * |" in result.markdown and "still in progress" in result.markdown
    assert (tmp_path / "c" / "predictions.png").exists()  # drawn for the runs that have a checkpoint
    assert read_run(runs[1]).in_progress is False


def test_each_rows_command_repeats_its_run(runs):
    import dataclasses
    import shlex

    from seglab import cli

    for run in runs:
        row = compare_runs([run], None).rows[0]
        argv = shlex.split(row["command"])
        assert argv[:2] == ["seglab", "train"]
        cfg = cli._config_from_args(cli.build_parser().parse_args(argv[1:]))
        saved = yaml.safe_load((run / "config.yaml").read_text())
        again = dataclasses.asdict(cfg)
        for key in ("out_dir", "run_name", "quiet"):
            saved.pop(key), again.pop(key)
        assert again == saved


def test_seglab_compare_command(runs, tmp_path, capsys):
    from seglab import cli

    assert cli.main(["compare", *map(str, runs), "--out", str(tmp_path / "c"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "| vit | vit |" in out and "| cnn | segnet-dsc-head |" in out and "predictions.png" in out
    other = tmp_path / "other"
    shutil.copytree(runs[0], other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["dataset"], cfg["data_root"] = "folder", str(tmp_path)
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert cli.main(["compare", str(runs[1]), str(other), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seglab: error: cannot compare runs on different datasets") and len(err.splitlines()) == 1
    assert f"{other}: folder at {tmp_path}" in err and not (tmp_path / "d").exists()


def test_start_weights_column_names_where_a_run_started(runs, tmp_path):
    started = tmp_path / "from-a-checkpoint"
    shutil.copytree(runs[0], started)
    config = yaml.safe_load((started / "config.yaml").read_text())
    config["init_from"] = str(runs[1])
    (started / "config.yaml").write_text(yaml.safe_dump(config))
    rows = compare_runs([runs[0], started], out_dir=None).rows
    assert [r["weights"] for r in rows] == ["random", str(runs[1])]
    from seglab.compare import start_weights

    assert start_weights({"encoder_weights": "imagenet", "init_from": None}) == "imagenet"
