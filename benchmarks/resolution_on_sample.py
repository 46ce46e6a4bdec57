"""Crops at the photos' own resolution against 128x128 squares, both scored at the labels' resolution, on the real
Oxford-IIIT Pet sample; then whole vs slide vs test-time augmentation at inference.

    PYTHONPATH=src python benchmarks/resolution_on_sample.py [--model fpn-efficientnet-lite0] [--epochs 5]
        [--data-root ../shared/data/oxford-iiit-pet-sample] [--runs squares,crops] [--report-only]

Runs (each `seglab train --model M --encoder-weights imagenet --recipe finetune` on the sample's trainval, 372
photos, validated on test, 340):
  squares   --protocol article --image-size 128: the photos squashed to 128x128 (the data path until issue 17)
  crops     the finetune recipe's own (original) protocol: crops of the photos at their own size (random rescale
            and crop, photometric distortion)
Every run's best checkpoint is then scored by `seglab eval --protocol original` on the test split at the trimaps'
own size, in whole mode, in slide mode and with --tta flip (and for crops, flip + scales 0.75,1.0,1.25): pixel
accuracy, mIoU, per-class IoU, images/s of the evaluation. Training minutes: the sum of the epochs' training time
(evaluation excluded); the load average is recorded at each run's start and end.
Results: benchmarks/results/resolution_sample.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import (RESULTS, SAMPLE_DATA, environment, load_average, markdown_table,  # noqa: E402
                               save_results)
from seglab.checkpoint import load_model  # noqa: E402
from seglab.config import TrainConfig, apply_recipe  # noqa: E402
from seglab.data import build_dataset  # noqa: E402
from seglab.evaluate import evaluate  # noqa: E402
from seglab.inference import Geometry, InferenceConfig  # noqa: E402
from seglab.run import RunDir  # noqa: E402
from seglab.train import train  # noqa: E402

RUNS = {"squares": {"protocol": "article", "image_size": 128}, "crops": {}}
MODES = {
    "whole": InferenceConfig(),
    "slide": InferenceConfig(mode="slide"),
    "whole + tta flip": InferenceConfig(flip=True),
    "whole + tta flip, scales 0.75-1.25": InferenceConfig(flip=True, scales=(0.75, 1.0, 1.25)),
}


def command(model: str, epochs: int, extra: dict) -> str:
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in extra.items())
    return (f"seglab train --model {model} --encoder-weights imagenet --recipe finetune --epochs {epochs} "
            f"--dataset oxford-pets --data-root $PETS {flags}").strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fpn-efficientnet-lite0")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--data-root", default=str(SAMPLE_DATA))
    p.add_argument("--runs", default=",".join(RUNS))
    p.add_argument("--out", default="runs/resolution", help="where the run directories go")
    p.add_argument("--report-only", action="store_true", help="score the finished runs again, train nothing")
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args()
    env = environment(torch.device("cpu"))
    test = build_dataset("oxford-pets", "test", root=args.data_root, image_size=None, interpolation="bilinear",
                         quiet=True)
    labelled = sum(test.pixel_counts())
    n_train = len(build_dataset("oxford-pets", "trainval", root=args.data_root, image_size=None, max_side=1024,
                                interpolation="bilinear", quiet=True))
    rows, records = [], []
    for name in args.runs.split(","):
        extra = RUNS[name]
        run_dir = Path(args.out) / f"{args.model}-{name}"
        load_start = load_average()  # (the finetune recipe's crops are dropped with protocol article: apply_recipe)
        if not args.report_only:
            values = apply_recipe(dict(model=args.model, encoder_weights="imagenet", dataset="oxford-pets",
                                       data_root=args.data_root, epochs=args.epochs, out_dir=str(run_dir.parent),
                                       run_name=run_dir.name, quiet=True, num_vis=7, **extra), "finetune")
            train(TrainConfig.from_dict(values, source=name))
        history = RunDir(run_dir).read_history()
        train_minutes = sum(n_train / h["images_per_s"] for h in history) / 60
        model, header = load_model(run_dir, "cpu")
        geometry = Geometry.from_dict(header.get("geometry") or {"image_size": header["image_size"],
                                                                 "interpolation": header["interpolation"]})
        for mode, config in MODES.items():
            t0 = time.perf_counter()
            m = evaluate(model, test, batch_size=8, device="cpu", geometry=geometry, inference=config)
            secs = time.perf_counter() - t0
            assert int(m.matrix.matrix.sum()) == labelled
            rows.append([name, geometry.protocol, mode, m["pixel_accuracy"], m["miou"], m["iou_pet"],
                         m["iou_background"], m["iou_border"], f"{train_minutes:.1f}", f"{len(test) / secs:.1f}"])
            records.append({"run": name, "mode": mode, "metrics": dict(m), "train_minutes": train_minutes,
                            "eval_images_per_s": len(test) / secs, "command": command(args.model, args.epochs, extra),
                            "load_start": load_start, "load_end": load_average(), "epochs": len(history)})
            print(rows[-1], flush=True)
    table = markdown_table(["run", "trained on", "inference", "pixel acc", "mIoU", "IoU pet", "IoU background",
                            "IoU border", "train min", "eval img/s"], rows)
    commands = "\n".join(f"- {n}: `{command(args.model, args.epochs, RUNS[n])}`" for n in args.runs.split(","))
    loads = ", ".join(f"{r['run']} {r['load_start']} -> {r['load_end']}" for r in records if r["mode"] == "whole")
    header = (f"# Squares vs crops at the photos' own size, scored at the trimaps' size (pet sample test, "
              f"{len(test)} photos, {labelled:,} labelled pixels)\n\n{env['device_name']}, torch {env['torch']}, "
              f"commit {env['git_commit'][:12]}, {env['date']}; load average (1 min) at start -> end: {loads}\n\n"
              f"{commands}\n\nthen `seglab eval RUN --protocol original [--mode slide] [--tta ...]` "
              f"(`PYTHONPATH=src python benchmarks/resolution_on_sample.py --model {args.model} --epochs "
              f"{args.epochs}`)\n\n")
    print(header + table)
    save_results({"environment": env, "rows": records}, header + table, args.out_dir, "resolution_sample")
    print(json.dumps({"saved": str(Path(args.out_dir) / "resolution_sample.md")}))


if __name__ == "__main__":
    main()
