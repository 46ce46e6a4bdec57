"""Regenerate every figure of docs/tutorial.md from real runs, with the seglab commands the tutorial shows.

    python docs/make_figures.py                                   # synthetic data, anyone, offline (~3 min on 2 cores)
    python docs/make_figures.py --data-root ../shared/data/oxford-iiit-pet-sample --update-tutorial
                                                                  # the Oxford-IIIT Pet sample: docs/figures/

Each step prints the command it runs (in this process, through seglab's own CLI) and the figure it wrote:
  shape_journey.png   Figure 7, the tensor's journey through the article's ViT   (seglab trace --figure)
  vit_predictions.png Figure 1, images / truth / prediction of the trained ViT  (seglab train writes it)
  vit_progress.gif    Figure 8, the predictions across epochs                    (seglab train writes it)
  attention.png       Figure 3, where a patch on the pet attends, per head       (seglab attention)
  compare*.png/.md/.csv the ViT against the CNN and SegFormer                      (seglab compare)
The numbers the tutorial quotes are written to numbers.json; --update-tutorial also writes them (and the comparison
table) into docs/tutorial.md between its <!-- make_figures:NAME --> markers, so text and figures come from one set
of runs. Runs go to --runs-dir; a finished run there is reused, not retrained.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# The three models of the comparison, each with its family's recipe (seglab train --model M --recipe R).
MODELS = [("vit-small", "article"), ("segnet-dsc-head", "segnet-part3"), ("segformer-b0", "segformer")]


def _say(text: str) -> None:
    print(text, flush=True)


def seglab(*argv: str) -> None:
    """Run one seglab command in this process (as `seglab ARGV...` would) and stop if it fails."""
    from seglab.cli import main

    _say("$ seglab " + " ".join(shlex.quote(a) for a in argv))
    code = main(list(argv))
    if code:
        raise SystemExit(f"seglab {' '.join(argv)} failed with exit code {code}")


def _finished(run_dir: Path, epochs: int) -> bool:
    metrics = run_dir / "metrics.csv"
    if not metrics.exists():
        return False
    with open(metrics, newline="") as f:
        return len(list(csv.DictReader(f))) >= epochs


def train_run(model: str, recipe: str, data: list[str], runs_dir: Path, epochs: int, extra: list[str]) -> Path:
    """seglab train ... (or reuse a finished run of the same name); returns the run folder."""
    name = f"{model}-{recipe}-e{epochs}"
    run_dir = runs_dir / name
    if _finished(run_dir, epochs):
        _say(f"(reusing {run_dir})")
        return run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an unfinished run of an earlier call: start it again
    seglab("train", "--model", model, "--recipe", recipe, *data, "--epochs", str(epochs), "--num-vis", "7",
           "--out-dir", str(runs_dir), "--run-name", name, "--quiet", *extra)
    return run_dir


def _pet_centre(mask: np.ndarray, patch: int) -> tuple[int, int]:
    """The patch (row, col) at the centre of the pet class (0) in a class-id mask."""
    ys, xs = np.nonzero(mask == 0)
    if len(ys) == 0:
        return mask.shape[0] // patch // 2, mask.shape[1] // patch // 2
    return int(ys.mean()) // patch, int(xs.mean()) // patch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", help="an Oxford-IIIT Pet folder (e.g. the sample); default: synthetic data")
    p.add_argument("--out", help="where the figures go (default: docs/figures with --data-root, else "
                                 "figures-synthetic/)")
    p.add_argument("--runs-dir", default="runs/make_figures")
    p.add_argument("--epochs", type=int, default=None, help="epochs per model (default: 10 on the sample, 4 synthetic)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--update-tutorial", action="store_true", help="write the numbers into docs/tutorial.md")
    p.add_argument("--quick", action="store_true", help="tiny runs (a smoke test: the pictures mean nothing)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    sample = args.data_root is not None
    out = Path(args.out or (DOCS / "figures" if sample else "figures-synthetic"))
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = Path(args.runs_dir) / ("sample" if sample else "synthetic")
    size = 32 if args.quick else args.image_size
    epochs = args.epochs or (1 if args.quick else 10 if sample else 4)
    if sample:
        data = ["--dataset", "oxford-pets", "--data-root", args.data_root]
    else:
        count = ["32", "16"] if args.quick else ["384", "128"]
        data = ["--dataset", "synthetic", "--train-samples", count[0], "--val-samples", count[1]]
    data += ["--image-size", str(size)]
    tiny = {"vit-small": ["-O", "embed_size=32", "-O", "num_heads=2", "-O", "num_blocks=1"],
            "segnet-dsc-head": ["-O", "widths=[8,16]", "-O", "depths=[1,1]"],
            "segformer-b0": ["-O", "hidden_sizes=[8,16,40,64]", "-O", "depths=[1,1,1,1]",
                             "-O", "decoder_hidden_size=32"]}

    # Figure 7: the shape journey of the article's ViT (no training needed).
    seglab("trace", "--model", "vit", "--figure", str(out / "shape_journey.png"))

    # Train the three models; each run writes Figure 1 per epoch and Figure 8 (progress.gif).
    runs = {}
    for model, recipe in MODELS:
        extra = tiny[model] if args.quick else []
        runs[model] = train_run(model, recipe, data, runs_dir, epochs, extra)
    vit = runs["vit-small"]
    last = sorted((vit / "figures").glob("epoch_*.png"))[-1]
    shutil.copy(last, out / "vit_predictions.png")
    shutil.copy(vit / "figures" / "progress.gif", out / "vit_progress.gif")
    _say(f"wrote {out / 'vit_predictions.png'} (Figure 1, {last.name}) and {out / 'vit_progress.gif'} (Figure 8)")

    from seglab.compare import read_run

    # Figure 3: where a patch on the pet attends, on a validation photo the ViT never trained on.
    from seglab.data import build_dataset

    if sample:
        name = (Path(args.data_root) / "annotations" / "test.txt").read_text().split()[0]
        photo = Path(args.data_root) / "images" / f"{name}.jpg"
        ds = build_dataset("oxford-pets", "test", root=args.data_root, image_size=size, quiet=True)
    else:
        from PIL import Image

        ds = build_dataset("synthetic", "val", image_size=size, count=int(count[1]), seed=0, quiet=True)
        photo = out / "photo.png"
        Image.fromarray(ds.images[0].permute(1, 2, 0).numpy()).save(photo)
    from seglab.models import build_model

    vit_patch = build_model("vit-small", image_size=size).args.patch_size
    row, col = _pet_centre(ds.masks[0].numpy(), vit_patch)
    seglab("attention", str(vit / "checkpoints" / "best.safetensors"), str(photo), "--patch", f"{row},{col}",
           "--out", str(out / "attention.png"), "--device", "cpu")

    # The ViT against the CNN and SegFormer.
    cmp_dir = runs_dir / "compare"
    seglab_compare([str(runs[m]) for m, _ in MODELS], cmp_dir)
    for name in ("curves.png", "predictions.png", "compare.md", "compare.csv"):
        shutil.copy(cmp_dir / name, out / (("" if name.startswith("compare") else "compare_") + name))

    numbers = _numbers(runs, vit, epochs, size, sample, args, time.perf_counter() - t0)
    numbers["background_share"] = float((ds.masks == 1).sum() / (ds.masks != 255).sum())  # "all background" acc.
    cnn = read_run(runs["segnet-dsc-head"]).history
    numbers["cnn_epochs_at_background"] = next(
        (i for i, r in enumerate(cnn) if abs(r["pixel_accuracy"] - numbers["background_share"]) > 1e-4), len(cnn))
    (out / "numbers.json").write_text(json.dumps(numbers, indent=1))
    if args.update_tutorial:
        _update_tutorial(DOCS / "tutorial.md", numbers, (out / "compare.md").read_text())
    total = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    _say(f"done in {time.perf_counter() - t0:.0f} s: {len(list(out.iterdir()))} files, {total / 1e6:.2f} MB in {out}")


def seglab_compare(run_dirs: list[str], out: Path) -> None:
    """`seglab compare RUN_DIR... --out DIR` (through the library until the CLI command exists)."""
    from seglab.cli import build_parser

    if "compare" in build_parser()._subparsers._group_actions[0].choices:  # noqa: SLF001
        seglab("compare", *run_dirs, "--out", str(out))
        return
    from seglab.compare import compare_runs

    _say("$ seglab compare " + " ".join(run_dirs) + f" --out {out}")
    print(compare_runs(run_dirs, out).markdown)


def _numbers(runs: dict[str, Path], vit: Path, epochs: int, size: int, sample: bool, args, seconds: float) -> dict:
    from seglab.compare import read_run, table_row

    command = "python docs/make_figures.py" + (f" --data-root {args.data_root}" if sample else "")
    command += f" --epochs {args.epochs}" if args.epochs else ""
    out = {"data": "oxford-iiit-pet-sample" if sample else "synthetic", "image_size": size, "epochs": epochs,
           "seconds": round(seconds), "command": command, "models": {}}
    for model, run_dir in runs.items():
        row = table_row(read_run(run_dir))
        out["models"][model] = {k: row[k] for k in ("parameters", "recipe", "best_pixel_accuracy",
                                                    "last_pixel_accuracy", "article_iou", "miou", "train_minutes",
                                                    "images_per_s")}
    rows = read_run(vit).history
    out["vit_first_epoch_pixel_accuracy"] = rows[0]["pixel_accuracy"]
    return out


def _update_tutorial(path: Path, numbers: dict, table: str) -> None:
    """Replace each <!-- make_figures:NAME -->...<!-- /make_figures --> block of the tutorial with fresh values."""
    m = numbers["models"]
    v, c, s = m["vit-small"], m["segnet-dsc-head"], m["segformer-b0"]
    blocks = {
        "compare_table": table.strip(),
        "vit_numbers": (f"After {numbers['epochs']} epochs the ViT's pixel accuracy went from "
                        f"{numbers['vit_first_epoch_pixel_accuracy']:.4f} (epoch 1) to {v['last_pixel_accuracy']:.4f}, "
                        f"mIoU {v['miou']:.4f}, article IoU {v['article_iou']:.4f}."),
        "compare_numbers": (f"Same data, {numbers['epochs']} epochs each: the ViT ({v['parameters']:,} parameters) "
                            f"ended at pixel accuracy {v['last_pixel_accuracy']:.4f} / mIoU {v['miou']:.4f}, the "
                            f"depthwise-separable CNN ({c['parameters']:,}) at {c['last_pixel_accuracy']:.4f} / "
                            f"{c['miou']:.4f}, SegFormer-B0 ({s['parameters']:,}) at {s['last_pixel_accuracy']:.4f} / "
                            f"{s['miou']:.4f}; training took {v['train_minutes']:.1f}, {c['train_minutes']:.1f} and "
                            f"{s['train_minutes']:.1f} minutes on a shared 2-core CPU."),
        "source": (f"Figures and numbers: `{numbers['command']} --update-tutorial` ({numbers['data']}, "
                   f"{numbers['image_size']}x{numbers['image_size']}, {numbers['epochs']} epochs per model)."),
        "background": (f"Predicting \"background\" everywhere scores a pixel accuracy of "
                       f"{numbers['background_share']:.4f} on this test split; the CNN's first "
                       f"{numbers['cnn_epochs_at_background']} epochs scored exactly that."),
    }
    text = path.read_text()
    for name, value in blocks.items():
        text, n = re.subn(rf"(<!-- make_figures:{name} -->\n).*?(\n<!-- /make_figures -->)",
                          lambda mt, value=value: mt.group(1) + value + mt.group(2), text, flags=re.S)
        if n == 0:
            _say(f"note: no <!-- make_figures:{name} --> block in {path}")
    path.write_text(text)
    _say(f"updated the numbers in {path}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))  # this checkout's seglab, also when the installed one is elsewhere
    main()
