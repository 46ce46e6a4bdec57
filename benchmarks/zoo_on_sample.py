"""Every registered model, from random weights and from pretrained ones, trained on the real Oxford-IIIT Pet sample
under one budget, then put side by side with `seglab compare` (the README's results table).

    python benchmarks/zoo_on_sample.py [--data-root ../shared/data/oxford-iiit-pet-sample] [--runs vit,fpn-imagenet]
        [--epochs 10] [--image-size 64] [--jobs 2] [--runs-dir /tmp/seglab-zoo] [--out benchmarks/results/zoo_sample]

Each run is one literal `seglab train` command (listed under the table), with its family's recipe and the same
number of epochs (10; vit-p8, 4x the cost of vit, 3) and image size (64x64) for all: vit* and vit-b16 from scratch
`article`; segformer-* `segformer`; segnet and segnet-head `segnet-part2`; segnet-dsc* `segnet-part3`; the
EfficientNet-Lite0/1/2 models `finetune` (from scratch with the encoder's lr ratio at 1 and nothing frozen: there is
nothing pretrained to keep). Pretrained runs: EfficientNet-Lite0/1/2's ImageNet encoders (`--encoder-weights imagenet`,
from the installed package), vit-b16 with google/vit-base-patch16-224-in21k and segformer-bN with nvidia/mit-bN
from the Hugging Face Hub. A run whose weights cannot be had (no network) is listed as not run, with seglab's
message.

`--jobs N` runs N trainings at once, one thread each (OMP_NUM_THREADS=1), longest first. Finished runs are reused
and interrupted ones resumed (`seglab train --resume`), so the script can be stopped and started again. The table
is `seglab compare` over every finished run: benchmarks/results/zoo_sample.{md,csv} (and curves.png,
predictions.png in RUNS_DIR/compare).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, SAMPLE_DATA, cpu_name, load_average  # noqa: E402

SCRATCH_FINETUNE = ["--encoder-lr-ratio", "1", "--freeze-encoder-epochs", "0"]
HUB_SEGFORMER = "hf:nvidia/mit-{}"
HUB_VIT = "hf:google/vit-base-patch16-224-in21k"


def family_recipe(model: str) -> str:
    """The recipe a model's family trains with."""
    if model.startswith("segformer"):
        return "segformer"
    if model in ("segnet", "segnet-head"):
        return "segnet-part2"
    if model.startswith("segnet-dsc"):
        return "segnet-part3"
    if "-efficientnet-lite" in model:
        return "finetune"
    return "article"


def all_runs() -> dict[str, list[str]]:
    """run name -> the `seglab train` options that make it (model, recipe, weights); every registered model from
    random weights, then the pretrained variants."""
    from seglab.models import list_models

    runs: dict[str, list[str]] = {}
    for model in list_models():
        recipe = family_recipe(model)
        extra = SCRATCH_FINETUNE if recipe == "finetune" else []
        runs[f"{model}-random"] = ["--model", model, "--recipe", recipe, *extra]
    for model in list_models():
        if "-efficientnet-lite" in model:
            runs[f"{model}-imagenet"] = ["--model", model, "--recipe", "finetune", "--encoder-weights", "imagenet"]
        elif model == "vit-b16":
            runs[f"{model}-in21k"] = ["--model", model, "--recipe", "finetune", "--encoder-weights", HUB_VIT]
        elif model.startswith("segformer-"):
            variant = model.split("-")[1]  # b0 .. b5
            runs[f"{model}-imagenet"] = ["--model", model, "--recipe", "segformer",
                                         "--init-from", HUB_SEGFORMER.format(variant), "-O", "normalize=true"]
    return runs


# Rough single-thread minutes per epoch at 64x64 (results/zoo_sample.md: train min / epochs), longest runs first.
_COST = {"vit-p8": 4.0, "segnet": 1.2, "segnet-head": 1.2, "vit": 0.9, "vit-mlp-head": 0.9, "vit-upsample": 0.9,
         "vit-b16": 0.9, "segformer-b5": 0.8, "segformer-b4": 0.7, "segformer-b3": 0.5}


def _finished_epochs(run_dir: Path) -> int:
    path = run_dir / "metrics.csv"
    if not path.exists():
        return 0
    with open(path, newline="") as f:
        return len(list(csv.DictReader(f)))


def train_one(name: str, options: list[str], epochs: int, args: argparse.Namespace) -> tuple[str | None, bool]:
    """Train (or finish, or reuse) one run; returns (None, or why it did not run; whether it trained now)."""
    runs_dir = Path(args.runs_dir)
    run_dir = runs_dir / name
    if _finished_epochs(run_dir) >= epochs:
        return None, False
    if (run_dir / "checkpoints" / "last.safetensors").exists():
        cmd = ["seglab", "train", "--resume", str(run_dir), "--quiet"]
    else:
        shutil.rmtree(run_dir, ignore_errors=True)  # stopped before its first checkpoint: start again
        cmd = ["seglab", "train", *options, "--dataset", "oxford-pets", "--data-root", args.data_root,
               "--image-size", str(args.image_size), "--epochs", str(epochs), "--out-dir", str(runs_dir),
               "--run-name", name, "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    log = runs_dir / f"{name}.log"
    runs_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log, "w") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=False).returncode
    lines = [ln.strip() for ln in log.read_text().splitlines() if ln.strip()]
    if code != 0:
        why = next((ln for ln in reversed(lines) if ln.startswith("error")), lines[-1] if lines else f"exit {code}")
        print(f"{name}: not run ({why})", flush=True)
        return why, False
    print(f"{name}: done in {(time.time() - t0) / 60:.1f} min", flush=True)
    return None, True


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=str(SAMPLE_DATA))
    p.add_argument("--runs", default=None, help="comma-separated run names (default: all; --list shows them)")
    p.add_argument("--list", action="store_true", help="print the run names and their options, then stop")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--epochs-of", action="append", default=["vit-p8=3"], metavar="MODEL=N",
                   help="fewer epochs for a model too slow for the budget (default: vit-p8=3, it costs 4x vit)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--jobs", type=int, default=2, help="trainings at once")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each training")
    p.add_argument("--runs-dir", default="/tmp/seglab-zoo")
    p.add_argument("--out", default=str(RESULTS / "zoo_sample"), help="results: OUT.md and OUT.csv")
    args = p.parse_args(argv)

    runs = all_runs()
    if args.list:
        for name, options in runs.items():
            print(f"{name:<36} {shlex.join(options)}")
        return
    if args.runs:
        unknown = [n for n in args.runs.split(",") if n not in runs]
        if unknown:
            raise SystemExit(f"unknown run(s) {', '.join(unknown)}; --list shows the names")
        runs = {n: runs[n] for n in args.runs.split(",")}
    epochs_of = {model: int(n) for model, n in (item.split("=", 1) for item in args.epochs_of)}
    order = sorted(runs, key=lambda n: -_COST.get(runs[n][1], 0.3))
    load_before = load_average()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = pool.map(lambda n: train_one(n, runs[n], epochs_of.get(runs[n][1], args.epochs), args), order)
        outcomes = dict(zip(order, results))
    load_after = load_average()

    done = [n for n in runs if outcomes[n][0] is None]
    compare_dir = Path(args.runs_dir) / "compare"
    subprocess.run(["seglab", "compare", *[str(Path(args.runs_dir) / n) for n in done], "--out", str(compare_dir),
                   "--num-images", "4"], check=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    table = (compare_dir / "compare.md").read_text()
    import torch

    meta = dict(date=str(date.today()), cpu=cpu_name(), torch=torch.__version__, threads_per_run=args.threads,
                jobs=args.jobs, epochs=args.epochs, image_size=args.image_size, data_root=args.data_root,
                trained_in_this_call=[n for n, (_, trained) in outcomes.items() if trained],
                load_average_at_start_of_this_call=load_before, load_average_at_end_of_this_call=load_after,
                not_run={n: why for n, (why, _) in outcomes.items() if why is not None})
    head = (f"Oxford-IIIT Pet sample ({args.data_root}), {args.image_size}x{args.image_size}, {args.epochs} epochs "
            f"each (except {', '.join(args.epochs_of)}), {args.jobs} runs at once on {meta['cpu']} with "
            f"{args.threads} thread(s) each, torch "
            f"{meta['torch']}, {meta['date']}. `python benchmarks/zoo_on_sample.py --epochs {args.epochs} "
            f"--image-size {args.image_size} --jobs {args.jobs}`; table printed by `seglab compare`.\n\n")
    tail = ""
    if meta["not_run"]:
        tail = "\nNot run here (seglab's message):\n\n" + "".join(
            f"- {n}: `seglab train {shlex.join(runs[n])} ...`: {why}\n" for n, why in meta["not_run"].items())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.md").write_text(head + table + tail)
    shutil.copyfile(compare_dir / "compare.csv", f"{out}.csv")
    Path(f"{out}.json").write_text(json.dumps(meta, indent=1))
    print(head + table + tail)


if __name__ == "__main__":
    main()
