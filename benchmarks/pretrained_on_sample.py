"""Pretrained vs from scratch on the real Oxford-IIIT Pet sample at 128x128, on this CPU.

    PYTHONPATH=src python benchmarks/pretrained_on_sample.py [--runs fpn-imagenet,fpn-scratch,...] [--threads 1]

Each run is `seglab train --recipe finetune` (AdamW, cosine after a half-epoch warm-up, the encoder at 0.3x the
head's learning rate and frozen, BatchNorm statistics too, for the first epoch; 5 epochs) on the sample's trainval
(372 photos), validated on its test split (340); the same model from scratch runs the same recipe with the lr ratio
at 1 and nothing frozen (there is nothing pretrained to keep); segformer-b0 from scratch runs its own `segformer`
recipe for the same number of epochs. Recorded: final pixel accuracy, the article's IoU, mIoU, training minutes
(wall clock, the sum of the epochs' training time, evaluation excluded), the process's CPU minutes for the whole
run (caching, training, evaluation: what one idle core would need), inference images/s on the test split (batch 32,
after training). The machine is shared (2 cores, 5 developers' jobs): wall minutes are upper bounds for an idle
machine; the load average is recorded at each run's start and end.
Results: benchmarks/results/pretrained_sample.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ["--encoder-lr-ratio", "1", "--freeze-encoder-epochs", "0"]  # nothing pretrained to protect
RUNS = {  # name: (model, encoder weights, recipe, extra options)
    "fpn-x2-imagenet": ("fpn-efficientnet-lite0", "imagenet", "finetune", ["-O", "input_scale=2"]),
    "fpn-imagenet": ("fpn-efficientnet-lite0", "imagenet", "finetune", []),
    "lraspp-imagenet": ("lraspp-efficientnet-lite0", "imagenet", "finetune", []),
    "unet-imagenet": ("unet-efficientnet-lite0", "imagenet", "finetune", []),
    "fpn-scratch": ("fpn-efficientnet-lite0", None, "finetune", SCRATCH),
    "lraspp-scratch": ("lraspp-efficientnet-lite0", None, "finetune", SCRATCH),
    "unet-scratch": ("unet-efficientnet-lite0", None, "finetune", SCRATCH),
    "segformer-b0-scratch": ("segformer-b0", None, "segformer", []),
}


def command(name: str, data_root: str, epochs: int | None) -> list[str]:
    from seglab.config import RECIPES

    model, weights, recipe, extra = RUNS[name]
    args = ["seglab", "train", "--model", model, "--recipe", recipe, "--dataset", "oxford-pets",
            "--data-root", data_root, "--image-size", "128", *extra]
    if weights:
        args += ["--encoder-weights", weights]
    if epochs is not None or recipe != "finetune":  # segformer-b0 trains as many epochs as the fine-tunes
        args += ["--epochs", str(epochs or RECIPES["finetune"]["epochs"])]
    return args


def _inference_images_per_s(model: torch.nn.Module, images: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        model(images[:8])  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(images), 32):
            model(images[i:i + 32])
        return len(images) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "oxford-iiit-pet-sample"))
    p.add_argument("--runs", default=",".join(RUNS))
    p.add_argument("--epochs", type=int, default=None, help="default: the finetune recipe's")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: on a shared machine, 2 threads "
                                                          "oversubscribe the cores and run several times slower)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pretrained_sample"))
    p.add_argument("--runs-dir", default="/tmp/seglab-pretrained-runs")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from seglab import cli
    from seglab.checkpoint import load_model
    from seglab.data import build_dataset

    out_json = Path(args.out + ".json")
    rows = json.loads(out_json.read_text())["rows"] if out_json.exists() else []
    done = {r["run"] for r in rows}
    test = build_dataset("oxford-pets", "test", root=args.data_root, image_size=128, interpolation="bilinear")
    images = torch.stack([test[i][0] for i in range(len(test))])  # (340, 3, 128, 128) in [0, 1]
    n_train = len(build_dataset("oxford-pets", "trainval", root=args.data_root, image_size=128,
                                interpolation="bilinear"))
    for name in args.runs.split(","):
        if name in done:
            continue
        cmd = command(name, args.data_root, args.epochs)
        run_name = f"{name}-{int(time.time())}"
        load = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        code = cli.main(cmd[1:] + ["--out-dir", args.runs_dir, "--run-name", run_name, "--quiet"])
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if code != 0:
            raise SystemExit(f"{name}: seglab train exited with {code}")
        run_dir = Path(args.runs_dir) / run_name
        with open(run_dir / "metrics.csv") as f:
            history = list(csv.DictReader(f))
        last = history[-1]
        model, _ = load_model(run_dir / "checkpoints" / "last.safetensors")
        row = dict(run=name, model=RUNS[name][0], encoder_weights=RUNS[name][1] or "none", recipe=RUNS[name][2],
                   epochs=len(history), params=sum(p.numel() for p in model.parameters()),
                   pixel_accuracy=float(last["pixel_accuracy"]), article_iou=float(last["article_iou"]),
                   miou=float(last["miou"]), best_pixel_accuracy=max(float(r["pixel_accuracy"]) for r in history),
                   train_minutes=sum(n_train / float(r["images_per_s"]) for r in history) / 60,
                   epoch_minutes=sum(float(r["seconds"]) for r in history) / 60,
                   wall_minutes=wall / 60, cpu_minutes=cpu / 60,
                   inference_images_per_s=_inference_images_per_s(model, images),
                   load_average_at_start=round(load, 2), load_average_at_end=round(os.getloadavg()[0], 2),
                   threads=args.threads,
                   command=" ".join(cmd), run_dir=str(run_dir))
        rows.append(row)
        print(f"{name:<22} pixel acc {row['pixel_accuracy']:.4f}  IoU {row['article_iou']:.4f}  "
              f"mIoU {row['miou']:.4f}  {row['train_minutes']:.1f} min  "
              f"{row['inference_images_per_s']:.0f} img/s", flush=True)
        _save(rows, out_json)


def _save(rows: list[dict], out_json: Path) -> None:
    out_json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"rows": rows, "cpu": common.cpu_name(), "torch": torch.__version__}
    out_json.write_text(json.dumps(meta, indent=2) + "\n")
    lines = ["| run | params | epochs | pixel acc. | article IoU | mIoU | training min (wall) | CPU min, whole run | "
             "inference img/s | load avg start/end |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['params']:,} | {r['epochs']} | {r['pixel_accuracy']:.4f} | "
                     f"{r['article_iou']:.4f} | {r['miou']:.4f} | {r['train_minutes']:.1f} | {r['cpu_minutes']:.1f} | "
                     f"{r['inference_images_per_s']:.0f} | {r['load_average_at_start']}/{r['load_average_at_end']} |")
    lines += ["", "Commands (each with `--out-dir DIR --run-name NAME --quiet`; OMP_NUM_THREADS / threads: "
              f"{rows[-1]['threads']}):", ""]
    lines += [f"- {r['run']}: `{r['command']}`" for r in rows]
    out_json.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
