"""Train every registered model briefly on the real Oxford-IIIT Pet sample and record what it reached.

    python benchmarks/zoo_on_sample.py --data-root ../shared/data/oxford-iiit-pet-sample [--models vit,segnet] \
        [--epochs 3] [--train-samples N]

Each model trains with its family's recipe (vit*: the article's; segformer-*: `segformer`; segnet*: `segnet-part2`)
for a few epochs, then the table records epoch-1 and final pixel accuracy / mIoU on the sample's test split, the
wall time and the training images/s. The sample is a tenth of the real trainval, so these are "does it learn"
figures, not the article's. Results: benchmarks/results/zoo_sample.{json,md} by default (--out); the committed runs
are benchmarks/results/zoo_sample_64*.{json,md} and zoo_sample_light.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from datetime import date
from pathlib import Path

import torch

from seglab.config import TrainConfig, apply_recipe
from seglab.models import list_models
from seglab.train import train

ROOT = Path(__file__).resolve().parents[1]


def recipe_for(model: str) -> str:
    if model.startswith("segformer"):
        return "segformer"
    if model.startswith("segnet"):
        return "segnet-part2"
    return "article"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "oxford-iiit-pet-sample"))
    p.add_argument("--models", default=",".join(list_models()))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    p.add_argument("--train-samples", type=int, default=None)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "zoo_sample"))
    p.add_argument("--runs-dir", default="/tmp/seglab-zoo-runs")
    args = p.parse_args()

    out_json = Path(args.out + ".json")
    results = json.loads(out_json.read_text())["rows"] if out_json.exists() else []
    done = {r["model"] for r in results}
    for name in args.models.split(","):
        if name in done:
            continue
        recipe = recipe_for(name)
        values = apply_recipe(dict(model=name, dataset="oxford-pets", data_root=args.data_root, epochs=args.epochs,
                                   image_size=args.image_size, train_samples=args.train_samples, quiet=True,
                                   out_dir=args.runs_dir, run_name=f"{name}-{int(time.time())}"), recipe)
        values["epochs"] = args.epochs
        if args.batch_size:
            values["batch_size"] = args.batch_size
        cfg = TrainConfig.from_dict(values)
        t0 = time.perf_counter()
        res = train(cfg)
        wall = time.perf_counter() - t0
        h = res.history
        row = dict(model=name, recipe=recipe, epochs=len(h), batch_size=cfg.batch_size, lr=cfg.lr,
                   epoch1_pixel_accuracy=float(h[0]["pixel_accuracy"]), epoch1_miou=float(h[0]["miou"]),
                   pixel_accuracy=float(h[-1]["pixel_accuracy"]), miou=float(h[-1]["miou"]),
                   article_iou=float(h[-1]["article_iou"]),
                   best_pixel_accuracy=max(float(r["pixel_accuracy"]) for r in h),
                   train_images_per_s=sum(float(r["images_per_s"]) for r in h) / len(h), wall_seconds=wall,
                   run_dir=str(res.run_dir))
        results.append(row)
        print(f"{name:<16} {recipe:<13} ep {row['epochs']}: pixel acc {row['epoch1_pixel_accuracy']:.4f} -> "
              f"{row['pixel_accuracy']:.4f}, mIoU {row['epoch1_miou']:.4f} -> {row['miou']:.4f}, "
              f"{row['train_images_per_s']:.1f} img/s, {wall:.0f} s", flush=True)
        _save(results, args, out_json)


def _save(results: list[dict], args: argparse.Namespace, out_json: Path) -> None:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT, check=False).stdout.strip()
    except OSError:
        commit = ""
    meta = dict(date=str(date.today()), device=platform.processor() or platform.machine(),
                cpu_threads=torch.get_num_threads(), torch=torch.__version__, commit=commit,
                data_root=args.data_root, image_size=args.image_size, train_samples=args.train_samples)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps({"meta": meta, "rows": results}, indent=1))
    lines = ["| model | recipe | epochs | pixel acc. (epoch 1 -> last) | mIoU (epoch 1 -> last) | article IoU | "
             "train img/s | wall s |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['recipe']} | {r['epochs']} | {r['epoch1_pixel_accuracy']:.4f} -> "
                     f"{r['pixel_accuracy']:.4f} | {r['epoch1_miou']:.4f} -> {r['miou']:.4f} | "
                     f"{r['article_iou']:.4f} | {r['train_images_per_s']:.1f} | {r['wall_seconds']:.0f} |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
