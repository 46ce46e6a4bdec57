"""Training controls (issue 18, part 2): gradient accumulation, clipping, EMA of the weights, early stopping on the
chosen metric, evaluation every N epochs; each tested for what it does, and resumed exactly."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from seglab.checkpoint import model_state, read_checkpoint, train_state
from seglab.config import TrainConfig
from seglab.train import optimizer_step, train

TINY = dict(model="vit", model_options=dict(patch_size=8, embed_size=16, num_blocks=1, num_heads=2),
            dataset="synthetic", image_size=16, train_samples=24, val_samples=8, batch_size=4, num_vis=0, quiet=True,
            lr=3e-3, optimizer="adamw", scheduler="none")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGLAB_DATA", str(tmp_path / "seglab-data"))


def cfg(tmp_path: Path, **kw) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, "out_dir": str(tmp_path / "runs"), **kw})


def rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def conv_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))  # no BatchNorm


def test_two_micro_batches_step_as_one_batch_of_both():
    x = torch.rand(8, 3, 12, 12)
    y = torch.randint(0, 3, (8, 12, 12))
    loss_fn = nn.CrossEntropyLoss()
    a, b = conv_model(), conv_model()
    opt_a, opt_b = torch.optim.AdamW(a.parameters(), lr=1e-2), torch.optim.AdamW(b.parameters(), lr=1e-2)
    whole = optimizer_step(a, opt_a, [(x, y)], loss_fn, torch.device("cpu"))
    split = optimizer_step(b, opt_b, [(x[:4], y[:4]), (x[4:], y[4:])], loss_fn, torch.device("cpu"))
    assert torch.allclose(whole, split, atol=1e-6)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_clipping_bounds_the_step():
    model = conv_model()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    x, y = torch.rand(4, 3, 8, 8) * 50, torch.randint(0, 3, (4, 8, 8))
    optimizer_step(model, opt, [(x, y)], nn.CrossEntropyLoss(), torch.device("cpu"), clip_grad_norm=1e-3)
    moved = torch.sqrt(sum(((p - q) ** 2).sum() for p, q in zip(model.parameters(), before)))
    assert 0 < moved <= 1e-3 + 1e-7


def test_accumulate_trains_fewer_steps_of_a_larger_batch(tmp_path):
    one = train(cfg(tmp_path, epochs=1, run_name="a1", batch_size=8))
    two = train(cfg(tmp_path, epochs=1, run_name="a2", batch_size=4, accumulate=2))
    # 24 images: 3 steps of 8 either way; synthetic masks have no ignore pixels and one size, so the steps match
    # up to BatchNorm's statistics (the ViT normalises its input per micro-batch)
    assert abs(float(rows(one.run_dir)[0]["train_loss"]) - float(rows(two.run_dir)[0]["train_loss"])) < 0.05


def test_ema_is_what_is_evaluated_and_saved_and_resumes_exactly(tmp_path):
    full = train(cfg(tmp_path, epochs=3, run_name="full", ema=0.9))
    tensors, header = read_checkpoint(full.run_dir / "checkpoints" / "last.safetensors")
    live, average = train_state(tensors), model_state(tensors)
    assert "n_averaged" in live and int(live.pop("n_averaged")) == 3 * 6
    assert set(live) == set(average)
    assert any(not torch.equal(live[k], average[k]) for k in live)  # the model saved is the average
    assert not torch.equal(average["norm_in.running_mean"], live["norm_in.running_mean"])  # buffers averaged too
    part = train(cfg(tmp_path, epochs=2, run_name="part", ema=0.9))
    resumed = train(cfg(tmp_path, epochs=3, ema=0.9), resume=part.run_dir)
    keep = ["epoch", "train_loss", "val_loss", "pixel_accuracy", "miou"]
    assert ([{k: r[k] for k in keep} for r in rows(resumed.run_dir)]
            == [{k: r[k] for k in keep} for r in rows(full.run_dir)])


def test_early_stop_on_the_chosen_metric(tmp_path):
    result = train(cfg(tmp_path, epochs=8, run_name="es", lr=1e-9, early_stop=2, best_metric="val_loss"))
    got = rows(result.run_dir)
    # What the rule says for the recorded losses: stop once 2 evaluations in a row do not beat the best so far.
    best, stale, expected, best_epoch = float("inf"), 0, 8, 0
    for r in got:
        loss = float(r["val_loss"])
        best, stale, best_epoch = (loss, 0, int(r["epoch"])) if loss < best else (best, stale + 1, best_epoch)
        if stale == 2:
            expected = int(r["epoch"])
            break
    assert expected < 8, "the run never stalled: the test needs a setting that does"
    assert len(got) == expected
    log = (result.run_dir / "train.log").read_text()
    assert f"early stop after epoch {expected}: val_loss has not improved for 2 evaluation(s)" in log
    _, header = read_checkpoint(result.run_dir / "checkpoints" / "best.safetensors")
    assert header["epoch"] == best_epoch and header["best_metric"] == "val_loss"


def test_eval_every_scores_only_those_epochs_and_the_last(tmp_path):
    result = train(cfg(tmp_path, epochs=3, run_name="ee", eval_every=2, num_vis=2))
    got = rows(result.run_dir)
    assert [r["val_loss"] != "" for r in got] == [False, True, True]
    figures = sorted(p.name for p in (result.run_dir / "figures").glob("epoch_*.png"))
    assert figures == ["epoch_002.png", "epoch_003.png"]
    assert result.metrics["epoch"] == 3


def test_controls_are_flags_with_help_and_checked(capsys):
    from seglab import cli
    from test_reliability import cli_error

    with pytest.raises(SystemExit):
        cli.main(["train", "-h"])
    out = capsys.readouterr().out
    for flag in ("--ema", "--clip-grad-norm", "--accumulate", "--early-stop", "--best-metric", "--eval-every"):
        assert flag in out
    assert "ema = 1.0: must be below 1" in cli_error(capsys, ["train", "--ema", "1.0"])
    assert "best_metric = 'dice'" in cli_error(capsys, ["train", "--best-metric", "dice"])
    assert copy.deepcopy(TrainConfig()).best_metric == "miou"


def test_tensorboard_events_hold_every_epochs_validation_miou(tmp_path):
    from helpers import require_module

    require_module("tensorboard", "pip install 'seglab[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(cfg(tmp_path, epochs=3, run_name="tb", num_vis=2, log="tensorboard", ema=0.99,
                       clip_grad_norm=1.0, accumulate=2, early_stop=2, best_metric="miou"))
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    miou = [(e.step, round(e.value, 5)) for e in events.Scalars("val/miou")]
    assert miou == [(int(r["epoch"]), round(float(r["miou"]), 5)) for r in rows(result.run_dir)]
    assert [e.step for e in events.Scalars("train/lr")] == [1, 2, 3]
    assert events.Tags()["images"] == ["predictions"]


def test_mlflow_run_holds_params_metrics_figures_and_the_best_checkpoint(tmp_path, monkeypatch):
    from helpers import require_module

    require_module("mlflow", "pip install 'seglab[mlflow]'")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = train(cfg(tmp_path, epochs=2, run_name="ml", num_vis=2, log="mlflow", mlflow_uri=uri))
    record = json.loads((result.run_dir / "mlflow.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(record["run_id"])
    assert run.data.params["model"] == "vit" and run.data.params["log"] == "mlflow"
    history = client.get_metric_history(record["run_id"], "miou")
    assert [(m.step, round(m.value, 5)) for m in history] == [(int(r["epoch"]), round(float(r["miou"]), 5))
                                                                for r in rows(result.run_dir)]
    names = {a.path for a in client.list_artifacts(record["run_id"], "checkpoints")}
    assert names == {"checkpoints/best.safetensors"}
    figures = {a.path for a in client.list_artifacts(record["run_id"], "figures")}
    assert "figures/epoch_001.png" in figures and "figures/curves.png" in figures
    # a resumed run continues the same MLflow run
    train(cfg(tmp_path, epochs=3, log="mlflow", mlflow_uri=uri), resume=result.run_dir)
    assert len(client.get_metric_history(record["run_id"], "miou")) == 3
