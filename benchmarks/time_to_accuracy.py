"""Time to accuracy, in the manner of airbench's table: how long, how many epochs and how many PFLOPs each
(model, recipe) needs to reach the article's validation pixel accuracy on Oxford-IIIT Pet's test split.

    python benchmarks/time_to_accuracy.py                        # vit + segnet, article vs fast, full dataset
    python benchmarks/time_to_accuracy.py --quick                # minutes on a CPU: small models, 3 epochs
    python benchmarks/time_to_accuracy.py --models vit --recipes article,fast --max-epochs 50 --amp bf16

Targets: the article's ViT figure (85.89% pixel accuracy, Part 4) and its CNN figure (88.28%, Part 2); every
run is checked against both. Each (model, recipe) is one call of seglab.train(); afterwards its history
(metrics.csv: one evaluation of the whole test split per epoch) gives the first epoch at or above each target.
Columns: train seconds (the training part of each epoch, summed: what airbench reports), wall seconds (the
whole epochs: training, evaluation, checkpoints and figures), epochs, and PFLOPs = training FLOPs per image
(torch.utils.flop_counter.FlopCounterMode on one forward + backward) x images seen. A target not reached
says so, with the best accuracy and its epoch.

The recipe "article" is seglab's reproduction of the authors' recipe for the model's family (`article` for
ViTs, `segnet-part2` for the CNNs); "fast" is seglab's `fast` recipe (src/seglab/config.py).
--max-epochs caps the epochs of every run (a cosine schedule then spans the capped run).
Results: benchmarks/results/time_to_accuracy-<device>[-quick][-tag].{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from seglab.config import RECIPES, TrainConfig, apply_recipe  # noqa: E402
from seglab.models import build_model  # noqa: E402
from seglab.device import resolve_device  # noqa: E402
from seglab.train import load_datasets, train  # noqa: E402
from seglab.run import numeric  # noqa: E402

TARGETS = {"article ViT (Part 4)": 0.8589, "article CNN (Part 2)": 0.8828}
QUICK_NOTE = ("--quick: the Oxford-IIIT Pet sample is about a tenth of the real trainval (372 of 3,680 images), "
              "trained here for 3 epochs on 128 of its images at 64x64, batch 16: the article's targets are NOT "
              "expected to be reached; this run only shows the benchmark works end to end.")


def recipe_name(model: str, recipe: str) -> str:
    """'article' means the authors' recipe for the model's family."""
    if recipe == "article" and model.startswith("segnet"):
        return "segnet-part2"
    return recipe


def flops_per_image(cfg: TrainConfig, device: torch.device, batch: int = 2) -> float:
    """Training FLOPs (forward + backward) per image of cfg's model at cfg's size, counted on a small batch."""
    model = build_model(cfg.model, num_classes=3, image_size=cfg.image_size, **cfg.model_options).to(device)
    model.train()
    x = torch.rand(batch, 3, cfg.image_size, cfg.image_size, device=device)
    y = torch.randint(0, 3, (batch, cfg.image_size, cfg.image_size), device=device)
    return common.train_step_flops(lambda: model(x), y) / batch


def first_reaching(history: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """The first epoch whose pixel accuracy is at least target, with cumulative times; or the best reached."""
    train_s = wall_s = 0.0
    best, best_epoch = -1.0, 0
    for row in history:
        acc = float(row["pixel_accuracy"])
        train_s += float(row["n_train"]) / float(row["images_per_s"])
        wall_s += float(row["seconds"])
        if acc > best:
            best, best_epoch = acc, int(row["epoch"])
        if acc >= target:
            return {"reached": True, "epoch": int(row["epoch"]), "accuracy": acc, "train_seconds": train_s,
                    "wall_seconds": wall_s}
    return {"reached": False, "best_accuracy": best, "best_epoch": best_epoch, "epochs_run": len(history),
            "train_seconds": train_s, "wall_seconds": wall_s}


def run_one(model: str, recipe: str, args: dict[str, Any], out_dir: Path, log: Callable[[str], None]) -> dict:
    name = recipe_name(model, recipe)
    args = dict(args)
    cap = args.pop("max_epochs", None)
    values = apply_recipe({"model": model, "out_dir": str(out_dir), "quiet": True, "num_vis": 3,
                           "run_name": f"{model}-{name}", **args}, name)
    if cap is not None:
        values["epochs"] = min(values.get("epochs", TrainConfig.epochs), cap)
    cfg = TrainConfig.from_dict(values, source=f"{model}/{name}")
    device = resolve_device(cfg.device)
    fpi = flops_per_image(cfg, device)
    t0 = time.perf_counter()
    result = train(cfg)
    total = time.perf_counter() - t0
    history = [numeric(row) for row in result.history]
    # images/s in metrics.csv is the split's size over the epoch's training seconds
    n_train = len(load_datasets(cfg)[0])
    for r in history:
        r["n_train"] = n_train
    reached = {}
    for label, target in TARGETS.items():
        hit = first_reaching(history, target)
        epochs = hit["epoch"] if hit["reached"] else hit["epochs_run"]
        hit["pflops"] = fpi * n_train * epochs / 1e15
        reached[label] = hit
    best = max(history, key=lambda r: r["pixel_accuracy"])
    log(f"{model} / {name}: best pixel accuracy {best['pixel_accuracy']:.4f} at epoch {int(best['epoch'])} "
        f"of {len(history)}, {total:.0f}s")
    return {"model": model, "recipe": recipe, "recipe_name": name, "config": {k: v for k, v in values.items()},
            "n_train": n_train, "train_flops_per_image": fpi, "total_seconds": total,
            "best_accuracy": best["pixel_accuracy"], "best_epoch": int(best["epoch"]),
            "history": [{k: r[k] for k in ("epoch", "train_loss", "pixel_accuracy", "miou", "seconds",
                                            "images_per_s")} for r in history],
            "targets": reached}


def to_markdown(result: dict) -> str:
    env = result["environment"]
    lines = [f"Time to accuracy on {env['device_name']}: torch {env['torch']}, commit {env['git_commit'][:12]}, "
             f"{env['date']}; data: {result['settings']['data']}.", "", f"Command: `{result['command']}`", ""]
    if result["settings"].get("quick"):
        lines += [f"**{QUICK_NOTE}**", ""]
    headers = ["model", "recipe", "target", "reached", "epochs", "train s", "wall s", "PFLOPs", "best acc (epoch)"]
    rows = []
    for run in result["runs"]:
        for label, hit in run["targets"].items():
            target = f"{TARGETS[label]:.2%} {label}"
            if hit["reached"]:
                rows.append([run["model"], run["recipe_name"], target, f"yes ({hit['accuracy']:.2%})", hit["epoch"],
                             hit["train_seconds"], hit["wall_seconds"], hit["pflops"],
                             f"{run['best_accuracy']:.2%} ({run['best_epoch']})"])
            else:
                rows.append([run["model"], run["recipe_name"], target, "not reached", f">{hit['epochs_run']}",
                             f">{hit['train_seconds']:.0f}", f">{hit['wall_seconds']:.0f}", f">{hit['pflops']:.3g}",
                             f"{hit['best_accuracy']:.2%} ({hit['best_epoch']})"])
    lines.append(common.markdown_table(headers, rows))
    lines += ["", "Train s: the training part of the epochs up to the one reaching the target (airbench's "
              "measure); wall s adds evaluation, checkpoints and figures. PFLOPs: FlopCounterMode's count of one "
              "training step per image (convolutions' backward as 2x their forward) x images seen; the "
              "optimizer's elementwise work is not counted."]
    return "\n".join(lines)


def run(models: list[str], recipes: list[str], args: dict[str, Any], out_dir: str | Path | None = common.RESULTS,
        tag: str = "", quick: bool = False, data_label: str = "", command: str = "",
        log: Callable[[str], None] = print) -> dict:
    """Train each (model, recipe) and write the table (JSON + markdown under out_dir, unless None)."""
    device = resolve_device(args.get("device", "auto"))
    env = common.environment(device)
    if quick:
        log(QUICK_NOTE)
    runs = []
    with tempfile.TemporaryDirectory(prefix="seglab-tta-") as tmp:
        for model in models:
            for recipe in recipes:
                runs.append(run_one(model, recipe, args, Path(tmp), log))
    result = {"benchmark": "time_to_accuracy", "command": command, "environment": env,
              "settings": {"models": models, "recipes": recipes, "overrides": args, "quick": quick,
                           "data": data_label, "targets": TARGETS}, "runs": runs,
              "load_average_at_end": common.load_average()}
    if quick:
        result["note"] = QUICK_NOTE
    markdown = to_markdown(result)
    log("\n" + markdown)
    if out_dir is not None:
        stem = f"time_to_accuracy-{device.type}" + ("-quick" if quick else "") + (f"-{tag}" if tag else "")
        paths = common.save_results(result, markdown, out_dir, stem)
        log(f"wrote {paths[0]} and {paths[1]}")
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_root = common.SAMPLE_DATA if common.SAMPLE_DATA.exists() else None
    p.add_argument("--data-root", default=str(default_root) if default_root else None,
                   help=f"an extracted Oxford-IIIT Pet (default: {common.SAMPLE_DATA} if it exists, else "
                   "seglab's data home)")
    p.add_argument("--dataset", default="oxford-pets", help="oxford-pets (default) or synthetic")
    p.add_argument("--models", default=None, help="comma-separated (default vit,segnet; quick: vit-small,"
                   "segnet-dsc-head)")
    p.add_argument("--recipes", default="article,fast", help=f"comma-separated from {', '.join(RECIPES)}")
    p.add_argument("--target", type=float, default=None, help="one pixel-accuracy target in [0, 1] instead of "
                   "the article's two")
    p.add_argument("--max-epochs", type=int, default=None, help="cap on every run's epochs")
    p.add_argument("--amp", default=None, help="auto, bf16 or off for every run (default: the config's auto)")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--train-samples", type=int, default=None)
    p.add_argument("--val-samples", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="a few minutes on a CPU; targets not expected")
    p.add_argument("--out", default=str(common.RESULTS))
    p.add_argument("--tag", default="")
    a = p.parse_args(argv)
    if a.target is not None:
        if not 0 < a.target <= 1:
            p.error("--target is a pixel accuracy in (0, 1]")
        TARGETS.clear()
        TARGETS[f"target {a.target:.2%}"] = a.target
    models = (a.models or ("vit-small,segnet-dsc-head" if a.quick else "vit,segnet")).split(",")
    args: dict[str, Any] = {"dataset": a.dataset, "device": a.device}
    if a.dataset == "oxford-pets" and a.data_root:
        args["data_root"] = a.data_root
    if a.quick:
        args.update(epochs=3, image_size=64, train_samples=128, val_samples=96, batch_size=16)
    for key, value in (("max_epochs", a.max_epochs), ("amp", a.amp), ("image_size", a.image_size),
                       ("train_samples", a.train_samples), ("val_samples", a.val_samples)):
        if value is not None:
            args[key] = value
    data_label = f"{a.dataset} {a.data_root or '(data home)'}"
    if a.data_root and Path(a.data_root).resolve() == common.SAMPLE_DATA.resolve():
        data_label += " (the sample: about a tenth of the real trainval)"
    command = "python benchmarks/time_to_accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    run(models, a.recipes.split(","), args, a.out, a.tag, a.quick, data_label, command.strip())


if __name__ == "__main__":
    main()
