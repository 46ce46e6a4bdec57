"""Fidelity to the authors' notebook: seglab's ViT against the notebook-style model of benchmarks/naive.py.

    python benchmarks/fidelity.py steps  [--steps 20] [--double]          # (a) the same losses, step by step
    python benchmarks/fidelity.py seeds  [--seeds 0,1,2] [--epochs 50]    # (b) 3 seeds each on the sample

(a) Same initial weights (the notebook model's, copied into seglab's), the same batches, dropout off,
deterministic CPU: the training losses of the two models, step by step, must agree to a relative difference
below 1e-4. Each side uses its own code: the notebook model (nn.Unfold, nn.MultiheadAttention, nn.Fold, plain
torch.optim.Adam, nn.CrossEntropyLoss) against seglab's ViT (reshape patches, scaled_dot_product_attention)
trained by seglab.train's own train_step with its optimizer and loss (fused Adam, cross-entropy ignoring 255).
`--double` runs both in float64, which shows what is left in float32 is rounding.

(b) With dropout on and the article's recipe, a small configuration (embed 192, 4 blocks, the article's 16x16
patches, 64x64) trained for the same number of steps on the Oxford-IIIT Pet sample: seglab's `train()` against the
notebook's loop (per-sample PIL decode, NEAREST resize, flip, contrast in a DataLoader; Adam 4e-4; StepLR(12, 0.8) per
epoch; batch 64 shuffled, last partial batch kept as in the notebook), 3 seeds each. Both are scored by the same
code (seglab.evaluate on the test split, no augmentation), so only training differs. Each side initialises its
own model as its code does; the side `nbinit` starts seglab from the notebook model's initial weights instead,
which isolates the initialisation; the side `nbdata` runs the notebook's model and loop on seglab's data path
(cached uint8 split, flip and contrast on whole float batches), which isolates the data path.

Results: benchmarks/results/fidelity-steps.{json,md} and fidelity-seeds.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, SAMPLE_DATA, environment  # noqa: E402
from benchmarks.naive import ArticleViT, PilSegmentationFolder  # noqa: E402

# The small configuration of (b): the article's architecture, narrower and shallower, for a 2-core CPU.
SMALL = dict(embed_size=192, num_blocks=4, num_heads=8, patch_size=16, dropout=0.2)


# ----------------------------------------------------------------------------------------------------------
# Weights across


@torch.no_grad()
def copy_notebook_weights(naive: ArticleViT, ours: nn.Module) -> None:
    """Copy every parameter and buffer of the notebook model into seglab's ViT (same architecture)."""
    bn, vin, blocks, out = naive.layers
    ours.norm_in.load_state_dict(bn.state_dict())
    ours.patch_embed.load_state_dict(vin.pe.embed_layer.state_dict())
    ours.pos_embed.weight.copy_(vin.position_embed[None])  # (T, C) -> (1, T, C)
    for src, dst in zip(blocks, ours.blocks):
        dst.ln1.load_state_dict(src.ln1.state_dict())
        dst.ln2.load_state_dict(src.ln2.state_dict())
        dst.attn.load_from_multihead_attention(src.mha)
        dst.mlp.fc1.load_state_dict(src.mlp.layers[0].state_dict())
        dst.mlp.fc2.load_state_dict(src.mlp.layers[2].state_dict())
    ours.head.load_state_dict(out.projection.state_dict())


def make_pair(image_size: int, seed: int, dtype: torch.dtype = torch.float32,
              **config: Any) -> tuple[nn.Module, nn.Module]:
    """(notebook model, seglab model) with the notebook model's initial weights in both."""
    from seglab import build_model

    torch.manual_seed(seed)
    naive = ArticleViT(image_size=image_size, **config)
    ours = build_model("vit", num_classes=3, image_size=image_size, **config)
    copy_notebook_weights(naive, ours)
    return naive.to(dtype), ours.to(dtype)


# ----------------------------------------------------------------------------------------------------------
# (a) step by step


def fixed_batches(steps: int, batch: int, image_size: int, seed: int,
                  data_root: str | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`steps` augmented training batches, drawn once: from the sample's trainval split (the notebook's PIL path)
    when data_root is given, else from seglab's synthetic dataset (offline)."""
    g = torch.Generator().manual_seed(seed)
    random.seed(seed)
    if data_root:
        from benchmarks.naive import folder_pairs

        oxford = (Path(data_root) / "annotations").is_dir()
        pairs = _split_pairs(data_root, "trainval") if oxford else folder_pairs(data_root)
        ds = PilSegmentationFolder(pairs, image_size=image_size)
        out = []
        for _ in range(steps):
            idx = torch.randint(len(ds), (batch,), generator=g).tolist()
            xs, ys = zip(*(ds[i] for i in idx))
            out.append((torch.stack(xs), torch.stack(ys)))
        return out
    from seglab.data import build_dataset
    from seglab.data.augment import AugmentConfig, augment_batch

    ds = build_dataset("synthetic", "train", image_size=image_size, count=batch * 4, seed=seed, quiet=True)
    out = []
    for _ in range(steps):
        idx = torch.randint(len(ds), (batch,), generator=g)
        out.append(augment_batch(ds.images[idx], ds.masks[idx], AugmentConfig(), g))
    return out


def step_by_step(steps: int = 20, batch: int = 8, image_size: int = 32, seed: int = 0, double: bool = False,
                 data_root: str | None = None, **config: Any) -> list[dict[str, float]]:
    """Train both models on the same batches from the same weights with dropout off; one row per step:
    {step, notebook, seglab, rel_diff}."""
    from seglab.config import TrainConfig
    from seglab.losses import build_loss
    from seglab.train import make_optimizer, train_step

    dtype = torch.float64 if double else torch.float32
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        config = {**config, "dropout": 0.0}
        naive, ours = make_pair(image_size, seed, dtype, **config)
        naive.train()
        ours.train()
        # Each side's own optimizer and loss: the notebook's torch.optim.Adam(lr=4e-4) and nn.CrossEntropyLoss;
        # seglab's from its TrainConfig (the article's recipe), through seglab.train's own train_step.
        cfg = TrainConfig(lr=4e-4, amp="off")
        opt_naive = torch.optim.Adam(naive.parameters(), lr=4e-4)
        opt_ours = make_optimizer(cfg, ours, torch.device("cpu"))
        loss_fn = build_loss(cfg.loss, cfg.class_weights, label_smoothing=cfg.label_smoothing)
        criterion = nn.CrossEntropyLoss()
        rows = []
        for i, (x, y) in enumerate(fixed_batches(steps, batch, image_size, seed, data_root)):
            x = x.to(dtype)
            opt_naive.zero_grad()
            loss_n = criterion(naive(x), y)
            loss_n.backward()
            opt_naive.step()
            if double:  # train_step computes the loss in float32; here the same step in float64
                loss_s = loss_fn(ours(x), y)
                opt_ours.zero_grad(set_to_none=True)
                loss_s.backward()
                opt_ours.step()
            else:
                loss_s = train_step(ours, opt_ours, x, y, loss_fn, torch.device("cpu"), amp="off")
            a, b = loss_n.item(), loss_s.item()
            rows.append({"step": i + 1, "notebook": a, "seglab": b, "rel_diff": abs(a - b) / abs(a)})
        return rows
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _steps_main(args: argparse.Namespace) -> None:
    config = dict(SMALL) if args.small else dict(embed_size=64, num_blocks=2, num_heads=4, patch_size=8)
    config.pop("dropout", None)
    t0 = time.perf_counter()
    rows = step_by_step(args.steps, args.batch, args.image_size, args.seed, args.double,
                        None if args.synthetic else args.data_root, **config)
    worst = max(r["rel_diff"] for r in rows)
    print(f"{'step':>4} {'notebook loss':>16} {'seglab loss':>16} {'rel. diff':>10}")
    for r in rows:
        print(f"{r['step']:>4} {r['notebook']:>16.10f} {r['seglab']:>16.10f} {r['rel_diff']:>10.2e}")
    verdict = "PASS" if worst < 1e-4 else "FAIL"
    print(f"max relative difference over {len(rows)} steps: {worst:.3e} ({verdict}: < 1e-4)")
    data = "synthetic" if args.synthetic else str(args.data_root)
    tag = "steps" + ("-small" if args.small else "") + ("-double" if args.double else "") + (
        "-synthetic" if args.synthetic else "")
    meta = dict(steps=args.steps, batch=args.batch, image_size=args.image_size, seed=args.seed,
                dtype="float64" if args.double else "float32", data=data, config=config,
                max_rel_diff=worst, seconds=time.perf_counter() - t0, environment=environment(torch.device("cpu")))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"fidelity-{tag}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"Fidelity (a): seglab's ViT vs the notebook-style model, same initial weights and batches, dropout off, "
             f"deterministic CPU, {meta['dtype']}; config {config}, {args.image_size}x{args.image_size}, batch "
             f"{args.batch}, data {data}. `python {' '.join(sys.argv)}`", "",
             "| step | notebook loss | seglab loss | relative difference |", "|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['notebook']:.10f} | {r['seglab']:.10f} | {r['rel_diff']:.2e} |" for r in rows]
    lines += ["", f"Max relative difference over {len(rows)} steps: **{worst:.3e}** ({verdict}, threshold 1e-4)."]
    (RESULTS / f"fidelity-{tag}.md").write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------------------
# (b) seeds


def _split_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """(image, trimap) paths of an Oxford-IIIT Pet split file, in the file's order (as torchvision reads it)."""
    root = Path(root)
    pairs = []
    for line in (root / "annotations" / f"{split}.txt").read_text().splitlines():
        if line.strip():
            name = line.split()[0]
            pairs.append((root / "images" / f"{name}.jpg", root / "annotations" / "trimaps" / f"{name}.png"))
    return pairs


def _seglab_batches(train_ds, batch_size: int, generator: torch.Generator):
    """One epoch of seglab's data path for the notebook loop: the cached uint8 split, shuffled, batches of 64 (the
    last partial one kept), flipped and contrast-jittered as whole float batches by seglab's augment_batch."""
    from seglab.data.augment import AugmentConfig, augment_batch

    aug = AugmentConfig(hflip=0.5, contrast=0.3)
    order = torch.randperm(len(train_ds), generator=generator)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        yield augment_batch(train_ds.images[idx], train_ds.masks[idx], aug, generator)


def notebook_run(seed: int, epochs: int, data_root: str, image_size: int, val_ds, config: dict[str, Any],
                 init_state: dict | None = None, seglab_data: bool = False) -> dict[str, Any]:
    """The notebook's training loop on the sample: PIL per-sample data in a shuffled DataLoader (last batch kept),
    Adam 4e-4, StepLR(12, 0.8) per epoch, nn.CrossEntropyLoss; scored by seglab.evaluate on val_ds. seglab_data:
    the same loop fed by seglab's data path instead (cached uint8 split, augmentation on whole float batches), which
    tells a difference made by the data path from one made by the model and the loop."""
    from seglab.data import build_dataset
    from seglab.evaluate import evaluate

    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    model = ArticleViT(image_size=image_size, **config)
    if init_state is not None:
        model.load_state_dict(init_state)
    if seglab_data:
        train_ds = build_dataset("oxford-pets", "trainval", root=data_root, image_size=image_size,
                                 interpolation="nearest", quiet=True)
        data_gen = torch.Generator().manual_seed(seed)
    else:
        ds = PilSegmentationFolder(_split_pairs(data_root, "trainval"), image_size=image_size)
        loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True,
                                             generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=4e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=12, gamma=0.8)
    criterion = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    steps = 0
    for _ in range(epochs):
        model.train()
        for x, y in (_seglab_batches(train_ds, 64, data_gen) if seglab_data else loader):
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            steps += 1
        scheduler.step()
    seconds = time.perf_counter() - t0
    m = evaluate(model, val_ds, batch_size=64, device="cpu", amp="off")
    return dict(side="notebook loop, seglab data" if seglab_data else "notebook", seed=seed, steps=steps,
                seconds=seconds, final_loss=loss.item(), **m)


def seglab_run(seed: int, epochs: int, data_root: str, image_size: int, val_ds, config: dict[str, Any],
               runs_dir: str, init_from: str | None = None) -> dict[str, Any]:
    """seglab's train() with the article's recipe, scored by seglab.evaluate on val_ds. The run is shared with
    benchmarks/fast_recipe.py (same folder and name), so it is trained once for both."""
    from seglab.checkpoint import load_model
    from seglab.evaluate import evaluate

    from benchmarks.fast_recipe import sample_run

    run_dir = sample_run("article", seed, epochs, runs_dir, data_root, image_size, config,
                         tag="-nbinit" if init_from else "", init_from=init_from)
    model, header = load_model(run_dir / "checkpoints" / "last.safetensors")
    m = evaluate(model, val_ds, batch_size=64, device="cpu", amp="off")
    steps = header["epoch"] * -(-len(_split_pairs(data_root, "trainval")) // 64)
    n_train = len(_split_pairs(data_root, "trainval"))
    train_s = sum(n_train / float(r["images_per_s"]) for r in _rows(run_dir))  # training only, as notebook_run
    return dict(side="seglab" + (" (notebook init)" if init_from else ""), seed=seed, steps=steps,
                seconds=train_s, **m)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    import csv

    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _seeds_main(args: argparse.Namespace) -> None:
    from seglab.data import build_dataset

    config = dict(SMALL)
    val_ds = build_dataset("oxford-pets", "test", root=args.data_root, image_size=args.image_size,
                           interpolation="nearest", quiet=True)
    out_json = RESULTS / f"fidelity-seeds{args.tag}.json"
    rows: list[dict[str, Any]] = json.loads(out_json.read_text())["rows"] if out_json.exists() else []
    done = {(r["side"], r["seed"]) for r in rows}
    sides = args.sides.split(",")
    for seed in (int(s) for s in args.seeds.split(",")):
        for side in sides:
            label = {"seglab": "seglab", "notebook": "notebook", "nbinit": "seglab (notebook init)",
                     "nbdata": "notebook loop, seglab data"}[side]
            if (label, seed) in done:
                continue
            if side in ("notebook", "nbdata"):
                row = notebook_run(seed, args.epochs, args.data_root, args.image_size, val_ds, config,
                                   seglab_data=side == "nbdata")
            elif side == "seglab":
                row = seglab_run(seed, args.epochs, args.data_root, args.image_size, val_ds, config, args.runs_dir)
            else:  # seglab's loop from the notebook model's initial weights (as notebook_run draws them)
                init = _notebook_init_checkpoint(seed, args.image_size, config, args.runs_dir)
                row = seglab_run(seed, args.epochs, args.data_root, args.image_size, val_ds, config, args.runs_dir,
                                 init_from=str(init))
            rows.append(row)
            print(f"{row['side']:<24} seed {seed}: {row['steps']} steps, pixel acc {row['pixel_accuracy']:.4f}, "
                  f"mIoU {row['miou']:.4f}, article IoU {row['article_iou']:.4f}, {row['seconds']:.0f} s", flush=True)
            _save_seeds(rows, args, out_json, config)


def _notebook_init_checkpoint(seed: int, image_size: int, config: dict[str, Any], runs_dir: str) -> Path:
    """The notebook model's initial weights for `seed`, copied into seglab's ViT and saved as a seglab checkpoint."""
    from seglab.checkpoint import save_checkpoint

    naive, ours = make_pair(image_size, seed, **config)
    ours.seglab_spec = {"name": "vit", "num_classes": 3, "image_size": image_size, "overrides": config}
    path = Path(runs_dir) / f"notebook-init-s{seed}.safetensors"
    save_checkpoint(path, ours, {"model": ours.seglab_spec, "epoch": 0})
    return path


def summarize(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, float]]:
    """{side: {mean, std, min, max, n}} of one metric over seeds."""
    out: dict[str, dict[str, float]] = {}
    for side in dict.fromkeys(r["side"] for r in rows):
        vals = [r[key] for r in rows if r["side"] == side]
        out[side] = dict(mean=statistics.mean(vals), std=statistics.stdev(vals) if len(vals) > 1 else 0.0,
                         min=min(vals), max=max(vals), n=len(vals))
    return out


def _save_seeds(rows: list[dict[str, Any]], args: argparse.Namespace, out_json: Path, config: dict) -> None:
    meta = dict(epochs=args.epochs, image_size=args.image_size, data_root=str(args.data_root), config=config,
                environment=environment(torch.device("cpu")),
                summary={k: summarize(rows, k) for k in ("pixel_accuracy", "miou", "article_iou")})
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"Fidelity (b): the article's recipe, {args.epochs} epochs on the Oxford-IIIT Pet sample (372 trainval / "
             f"340 test) at {args.image_size}x{args.image_size}, ViT {config}; scored by seglab.evaluate on the test "
             f"split. CPU ({meta['environment']['device_name']}), shared with other work: seconds are indicative. "
             f"`python benchmarks/fidelity.py seeds --seeds {args.seeds} --epochs {args.epochs} --sides {args.sides}`",
             "", "| side | seed | steps | pixel acc. | mIoU | article IoU | train s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['side']} | {r['seed']} | {r['steps']} | {r['pixel_accuracy']:.4f} | {r['miou']:.4f} | "
                     f"{r['article_iou']:.4f} | {r['seconds']:.0f} |")
    lines += ["", "| side | seeds | pixel acc. mean ± std (min-max) | mIoU mean ± std (min-max) | "
              "article IoU mean ± std |", "|---|---|---|---|---|"]
    s = meta["summary"]
    for side in s["pixel_accuracy"]:
        pa, mi, ai = s["pixel_accuracy"][side], s["miou"][side], s["article_iou"][side]
        lines.append(f"| {side} | {pa['n']} | {pa['mean']:.4f} ± {pa['std']:.4f} ({pa['min']:.4f}-{pa['max']:.4f}) | "
                     f"{mi['mean']:.4f} ± {mi['std']:.4f} ({mi['min']:.4f}-{mi['max']:.4f}) | "
                     f"{ai['mean']:.4f} ± {ai['std']:.4f} |")
    Path(str(out_json)[:-5] + ".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="part", required=True)
    a = sub.add_parser("steps", help="(a) losses step by step")
    a.add_argument("--steps", type=int, default=20)
    a.add_argument("--batch", type=int, default=16)
    a.add_argument("--image-size", type=int, default=64)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--double", action="store_true", help="float64 instead of float32")
    a.add_argument("--small", action="store_true", help="the (b) config (embed 192, 4 blocks) instead of 64 / 2")
    a.add_argument("--synthetic", action="store_true", help="batches from the synthetic dataset (no data needed)")
    a.add_argument("--data-root", default=str(SAMPLE_DATA))
    b = sub.add_parser("seeds", help="(b) 3 seeds each, dropout on, the article's recipe, on the sample")
    b.add_argument("--seeds", default="0,1,2")
    b.add_argument("--epochs", type=int, default=50)
    b.add_argument("--image-size", type=int, default=64)
    b.add_argument("--sides", default="seglab,notebook",
                   help="seglab, notebook, nbinit (seglab from the notebook's init), nbdata (the notebook's model "
                        "and loop on seglab's data path)")
    b.add_argument("--data-root", default=str(SAMPLE_DATA))
    b.add_argument("--runs-dir", default="/tmp/seglab-sample-runs")
    b.add_argument("--tag", default="", help="suffix of the results files")
    args = p.parse_args(argv)
    if args.part == "steps":
        if not args.synthetic and not Path(args.data_root).is_dir():
            print(f"no data at {args.data_root}: using the synthetic dataset (--synthetic)")
            args.synthetic = True
        _steps_main(args)
    else:
        _seeds_main(args)


if __name__ == "__main__":
    main()
