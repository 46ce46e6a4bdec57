"""Does a recipe (`fast`, or a model family's own) reach the accuracy the `article` recipe ends at, in less wall time?

    python benchmarks/fast_recipe.py [--seeds 0,1,2] [--set lr=2e-3 --tag=-lr2e3]
    python benchmarks/fast_recipe.py --model segformer-b0 --candidate segformer [--set epochs=20]

Same model (by default the article's ViT at embed 192, 4 blocks, 16x16 patches), same data (the Oxford-IIIT Pet
sample at 64x64: 372 trainval / 340 test), 3 seeds. For each seed: the `article` recipe's final pixel accuracy
(after its 50 epochs) is the target; the table gives the epoch at which the candidate recipe first reached it and
the wall seconds up to then (sum of the per-epoch seconds in metrics.csv, training plus the per-epoch evaluation
both recipes do) against the article's total; the same for mIoU. `--set KEY=VALUE` changes the candidate recipe's
fields for an experiment (`--tag` names its results). The runs of both recipes are interleaved seed by seed so that
both see the same load on a shared machine; the load average at the start and end is recorded.

Results: benchmarks/results/fast_recipe{tag}.{json,md} for the ViT and `fast`, else
benchmarks/results/recipe_{model}_{candidate}{tag}.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, SAMPLE_DATA, environment, load_average  # noqa: E402
from seglab.run import numeric  # noqa: E402

MODEL = dict(embed_size=192, num_blocks=4, num_heads=8, patch_size=16, dropout=0.2)


def sample_run(recipe: str, seed: int, epochs: int | None, runs_dir: str, data_root: str, image_size: int,
               model_options: dict[str, Any], tag: str = "", overrides: dict[str, Any] | None = None,
               init_from: str | None = None, model: str = "vit", encoder_weights: str | None = None) -> Path:
    """Train (or reuse, when it finished before) one run of `model` with `recipe` on the sample; returns its
    folder."""
    from seglab.config import TrainConfig, apply_recipe
    from seglab.train import train

    values = apply_recipe(dict(model=model, dataset="oxford-pets", data_root=data_root, image_size=image_size,
                               seed=seed, quiet=True, out_dir=runs_dir, model_options=model_options, amp="off",
                               init_from=init_from, encoder_weights=encoder_weights), recipe)
    values.update(overrides or {})
    values["epochs"] = recipe_epochs(recipe, epochs or values.get("epochs"))
    name = _run_name(model, recipe, tag, seed, values["epochs"])
    values["run_name"] = name
    run_dir = Path(runs_dir) / name
    done = run_dir / "metrics.csv"
    if done.exists() and len(read_rows(run_dir)) == values["epochs"]:
        return run_dir
    if (run_dir / "checkpoints" / "last.safetensors").exists():  # interrupted earlier: finish it
        train(TrainConfig.from_dict(values), resume=run_dir)
    else:
        train(TrainConfig.from_dict(values))
    return run_dir


def recipe_epochs(recipe: str, epochs: int | None = None) -> int:
    """`epochs` if given, else the recipe's own length, else TrainConfig's default (a recipe without one)."""
    from seglab.config import RECIPES, TrainConfig

    return epochs or RECIPES[recipe].get("epochs", TrainConfig().epochs)


def _run_name(model: str, recipe: str, tag: str, seed: int, epochs: int) -> str:
    prefix = "" if model == "vit" else f"{model}-"  # the ViT's runs keep their first names
    return f"{prefix}{recipe}{tag}-s{seed}-e{epochs}"


def read_rows(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [numeric(r) for r in csv.DictReader(f)]


def reach(rows: list[dict[str, float]], target: float, key: str = "pixel_accuracy") -> tuple[int | None, float | None]:
    """(first epoch whose `key` >= target, wall seconds up to and including it), or (None, None)."""
    wall = 0.0
    for r in rows:
        wall += r["seconds"]
        if r[key] >= target:
            return int(r["epoch"]), wall
    return None, None


def _kv(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items or []:
        k, v = item.split("=", 1)
        out[k.replace("-", "_")] = yaml.safe_load(v)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--data-root", default=str(SAMPLE_DATA))
    p.add_argument("--runs-dir", default="/tmp/seglab-sample-runs")
    p.add_argument("--model", default="vit", help="the model both recipes train (default: the article's ViT)")
    p.add_argument("--model-option", action="append", metavar="KEY=VALUE",
                   help="a model option (default for vit: embed 192, 4 blocks, 8 heads, 16x16 patches, dropout 0.2)")
    p.add_argument("--encoder-weights", default=None, help="pretrained encoder weights for both recipes' runs")
    p.add_argument("--candidate", default="fast", help="the recipe measured against `article`")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field of the candidate recipe")
    p.add_argument("--tag", default="", help="suffix of the candidate runs' names and of the results files")
    p.add_argument("--report-only", action="store_true", help="write the table from the runs already there")
    args = p.parse_args(argv)
    overrides = _kv(args.set)
    args.model_options = _kv(args.model_option) if args.model_option else (MODEL if args.model == "vit" else {})
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    args.load_start = load_average()
    for seed in seeds:
        common = (args.runs_dir, args.data_root, args.image_size, args.model_options)
        art_dir = Path(args.runs_dir) / _run_name(args.model, "article", "", seed, recipe_epochs("article"))
        fast_epochs = overrides.get("epochs")
        if not args.report_only:
            art_dir = sample_run("article", seed, None, *common, model=args.model,
                                 encoder_weights=args.encoder_weights)
            fast_dir = sample_run(args.candidate, seed, fast_epochs, *common, tag=args.tag, overrides=overrides,
                                  model=args.model, encoder_weights=args.encoder_weights)
        else:
            epochs = recipe_epochs(args.candidate, fast_epochs)
            fast_dir = Path(args.runs_dir) / _run_name(args.model, args.candidate, args.tag, seed, epochs)
            if not (fast_dir / "metrics.csv").exists() or not (art_dir / "metrics.csv").exists():
                continue
        art, fast = read_rows(art_dir), read_rows(fast_dir)
        target = art[-1]["pixel_accuracy"]
        epoch, wall = reach(fast, target)
        miou_epoch, miou_wall = reach(fast, art[-1]["miou"], "miou")
        row = dict(seed=seed, article_epochs=len(art), article_final_pixel_accuracy=target,
                   article_final_miou=art[-1]["miou"],
                   article_best_pixel_accuracy=max(r["pixel_accuracy"] for r in art),
                   article_wall_s=sum(r["seconds"] for r in art), fast_epochs=len(fast),
                   fast_final_pixel_accuracy=fast[-1]["pixel_accuracy"], fast_final_miou=fast[-1]["miou"],
                   fast_wall_s=sum(r["seconds"] for r in fast), fast_reached_epoch=epoch, fast_reached_wall_s=wall,
                   fast_reached_miou_epoch=miou_epoch, fast_reached_miou_wall_s=miou_wall)
        rows.append(row)
        print(f"seed {seed}: article {len(art)} ep -> pixel acc {target:.4f} in {row['article_wall_s']:.0f} s; "
              f"{args.candidate} "
              f"reached it at epoch {epoch} ({'-' if wall is None else f'{wall:.0f} s'}), ended at "
              f"{row['fast_final_pixel_accuracy']:.4f} after {len(fast)} ep in {row['fast_wall_s']:.0f} s", flush=True)
        _save(rows, args, overrides)


def _mean_std(vals: list[float], digits: int = 4) -> str:
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals) if len(vals) > 1 else 0.0:.{digits}f}"


def _save(rows: list[dict[str, Any]], args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    import torch

    from seglab.config import RECIPES

    cand = args.candidate
    now = load_average()
    load = (f"load average (1, 5, 15 min) when this report was written {now}" if args.report_only else
            f"load average (1, 5, 15 min) at the start {args.load_start}, at the end {now}")
    fast = {**RECIPES[cand], **overrides}
    meta = dict(model=args.model, encoder_weights=args.encoder_weights, image_size=args.image_size,
                data_root=args.data_root, model_options=args.model_options, candidate=cand, candidate_recipe=fast,
                article_recipe=RECIPES["article"], environment=environment(torch.device("cpu")),
                load_average_at_start=args.load_start, load_average_now=now)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"fast_recipe{args.tag}" if (args.model, cand) == ("vit", "fast") else \
        f"recipe_{args.model}_{cand}{args.tag}"
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    cmd = "python benchmarks/fast_recipe.py" + (f" --model {args.model}" if args.model != "vit" else "") + \
        (f" --encoder-weights {args.encoder_weights}" if args.encoder_weights else "") + \
        "".join(f" --model-option {s}" for s in args.model_option or []) + \
        (f" --candidate {cand}" if cand != "fast" else "") + "".join(f" --set {s}" for s in args.set or []) + \
        (f" --tag={args.tag}" if args.tag else "")
    lines = [f"`{cand}` ({', '.join(f'{k}={v}' for k, v in fast.items())}) against `article` on the Oxford-IIIT Pet "
             f"sample at {args.image_size}x{args.image_size}, {args.model} {args.model_options}"
             + (f" from {args.encoder_weights} weights" if args.encoder_weights else "") + ". "
             f"{meta['environment']['device_name']}; {load} "
             f"(the runs of both recipes interleaved seed by seed). `{cmd}`", "",
             f"| seed | article: epochs, final pixel acc. (mIoU), wall s | {cand}: epoch reaching that pixel acc., "
             f"wall s to it | {cand}: epoch reaching that mIoU, wall s to it | {cand}: epochs, final pixel acc. "
             "(mIoU), wall s |",
             "|---|---|---|---|---|"]
    for r in rows:
        reached = (f"epoch {r['fast_reached_epoch']}, {r['fast_reached_wall_s']:.0f} s" if r["fast_reached_epoch"]
                   else "not reached")
        reached_miou = (f"epoch {r['fast_reached_miou_epoch']}, {r['fast_reached_miou_wall_s']:.0f} s"
                        if r["fast_reached_miou_epoch"] else "not reached")
        lines.append(f"| {r['seed']} | {r['article_epochs']}, {r['article_final_pixel_accuracy']:.4f} "
                     f"({r['article_final_miou']:.4f}), {r['article_wall_s']:.0f} | {reached} | {reached_miou} | "
                     f"{r['fast_epochs']}, "
                     f"{r['fast_final_pixel_accuracy']:.4f} ({r['fast_final_miou']:.4f}), {r['fast_wall_s']:.0f} |")
    if rows:
        col = lambda key: _mean_std([r[key] for r in rows], 0 if key.endswith("_s") else 4)  # noqa: E731
        lines += ["", f"Mean ± std over {len(rows)} seeds: article final pixel acc. "
                  f"{col('article_final_pixel_accuracy')}, mIoU {col('article_final_miou')}, wall "
                  f"{col('article_wall_s')} s; {cand} final pixel acc. {col('fast_final_pixel_accuracy')}, mIoU "
                  f"{col('fast_final_miou')}, wall {col('fast_wall_s')} s; "
                  f"{cand} reached the article's final pixel accuracy in "
                  f"{sum(1 for r in rows if r['fast_reached_epoch'])} of {len(rows)} seeds, its final mIoU in "
                  f"{sum(1 for r in rows if r['fast_reached_miou_epoch'])}."]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
