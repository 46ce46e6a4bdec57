"""`seglab` sub-commands: parse, call the library, print. Errors a user can cause exit with code 2 and one message."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from .errors import SeglabError

DEMO = dict(model="vit", dataset="synthetic", image_size=64, train_samples=1024, val_samples=256, epochs=10,
            batch_size=32, lr=1e-3, optimizer="adamw", weight_decay=0.01, scheduler="cosine", warmup_epochs=1.0,
            contrast=0.3, hflip=0.5, interpolation="bilinear", num_vis=14, recipe="demo",
            model_options=dict(patch_size=8, embed_size=128, num_blocks=4, num_heads=4, dropout=0.0))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value}")
    return value


def _parse_kv(items: list[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise SeglabError(f"{flag} {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            out[k.strip().replace("-", "_")] = yaml.safe_load(v)
        except yaml.YAMLError as e:
            raise SeglabError(f"{flag} {item!r}: the value is not valid YAML ({' '.join(str(e).split())})") from None
    return out


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; defaults suppressed so we know which were given explicitly."""
    from .config import TrainConfig

    hints = get_type_hints(TrainConfig)
    g = p.add_argument_group("training options (fields of TrainConfig; defaults: the article's recipe)")
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("model_options", "recipe"):
            continue
        flag = "--" + f.name.replace("_", "-")
        text = str(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        if hints[f.name] is bool:
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=f"(default: {default})")
            continue
        kind = int if ("int" in text and "float" not in text) else float if "float" in text else str
        g.add_argument(flag, type=kind, default=argparse.SUPPRESS, metavar=f.name.upper(), help=f"(default: {default})")
    g.add_argument("--model-option", "-O", action="append", metavar="KEY=VALUE",
                   help="a model config override, e.g. -O embed_size=512 (repeatable)")


def _config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None):
    from .config import TrainConfig, apply_recipe

    values: dict[str, Any] = dict(base or {})
    if getattr(args, "config", None):
        values.update(dataclasses.asdict(TrainConfig.from_yaml(args.config)))
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if hasattr(args, f.name) and f.name != "recipe"}
    if getattr(args, "recipe", None):
        values = apply_recipe(values, args.recipe)
    values.update(given)
    opts = _parse_kv(getattr(args, "model_option", None), "--model-option")
    if opts:
        values["model_options"] = {**values.get("model_options", {}), **opts}
    return TrainConfig.from_dict(values, source="options")


def _print_metrics(m: dict[str, float]) -> None:
    keys = ["pixel_accuracy", "article_iou", "miou"] + [k for k in m if k.startswith("iou_")]
    for k in keys:
        if k in m:
            print(f"  {k:<16} {float(m[k]):.4f}")


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    if args.resume:
        cfg = None
        if hasattr(args, "epochs"):
            from .config import TrainConfig

            cfg = dataclasses.replace(TrainConfig.from_yaml(Path(args.resume) / "config.yaml"), epochs=args.epochs,
                                      quiet=getattr(args, "quiet", False))
        result = train(cfg, resume=args.resume)
    else:
        result = train(_config_from_args(args))
    from . import distributed as dist

    if dist.is_main():
        print(f"run directory: {result.run_dir}")
        _print_metrics(result.metrics)
    dist.shutdown()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .config import TrainConfig
    from .train import train

    values = dict(DEMO, out_dir=args.out_dir, quiet=args.quiet, device=args.device)
    if args.epochs is not None:
        values["epochs"] = args.epochs
    t0 = time.perf_counter()
    result = train(TrainConfig.from_dict(values, source="demo"))
    seconds = time.perf_counter() - t0
    run = result.run_dir
    print(f"demo: trained a small ViT on the synthetic dataset in {seconds:.0f} s")
    print(f"  final pixel accuracy {result.metrics['pixel_accuracy']:.4f}, mIoU {result.metrics['miou']:.4f}")
    print(f"  run directory: {run}")
    print(f"  metrics:  {run / 'metrics.csv'}")
    print(f"  figures:  {run / 'figures'} (epoch_NNN.png, progress.gif, curves.png)")
    print(f"  weights:  {run / 'checkpoints' / 'best.safetensors'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .data import build_dataset
    from .train import evaluate, resolve_device

    device = resolve_device(args.device)
    model, header = load_model(args.checkpoint, device)
    dataset = args.dataset or header.get("dataset")
    if dataset is None:
        raise SeglabError("--dataset is required: this checkpoint does not record its dataset")
    split = args.split or ("test" if dataset == "oxford-pets" else "val")
    ds = build_dataset(dataset, split, root=args.data_root, download=args.download,
                       image_size=int(header.get("image_size", header["model"]["image_size"])),
                       interpolation=header.get("interpolation", "nearest"), skip_bad=args.skip_bad, quiet=args.quiet)
    if ds.num_classes != header["model"]["num_classes"]:
        raise SeglabError(f"dataset {dataset} has {ds.num_classes} classes but the model predicts "
                          f"{header['model']['num_classes']}")
    t0 = time.perf_counter()
    m = evaluate(model, ds, batch_size=args.batch_size, device=device, quiet=args.quiet)
    secs = time.perf_counter() - t0
    print(f"{header['model']['name']} on {dataset}/{split} ({len(ds)} images, {secs:.1f} s, {len(ds) / secs:.1f} img/s)")
    _print_metrics(m)
    if ds.skipped:
        print(f"skipped {len(ds.skipped)} bad file(s): " + ", ".join(s for s, _ in ds.skipped))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict

    results = predict(args.checkpoint, args.inputs, out_dir=args.out, batch_size=args.batch_size, device=args.device,
                      quiet=args.quiet, skip_bad=args.skip_bad)
    print(f"wrote {len(results)} mask(s) and overlay(s) to {args.out}")
    if results.skipped:
        print(f"skipped {len(results.skipped)} bad file(s):")
        for path, why in results.skipped:
            print(f"  {path}: {why}")
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from .models import build_model
    from .trace import format_trace, trace_model

    overrides = _parse_kv(args.model_option, "--model-option")
    for name in ("embed_size", "num_blocks", "num_heads", "patch_size"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    model = build_model(args.model, num_classes=args.num_classes, image_size=args.image_size, **overrides)
    rows = trace_model(model, args.image_size)
    print(format_trace(rows))
    if args.figure:
        from .viz import save_shape_journey

        save_shape_journey(rows, args.figure, title=f"{args.model}: the journey of a tensor")
        print(f"wrote {args.figure}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    import torch

    from .models import build_model, list_models, model_entry
    from .trace import model_flops

    print(f"{'name':<16} {'params':>12} {'GFLOPs@128':>11} {'GFLOPs@512':>11}  published")
    for name in list_models():
        with torch.device("meta"):  # counts shapes only: no memory, no compute
            model = build_model(name, num_classes=args.num_classes)
        params = sum(p.numel() for p in model.parameters())
        g128, g512 = (model_flops(model, s) / 1e9 for s in (128, 512))
        print(f"{name:<16} {params:>12,} {g128:>11.2f} {g512:>11.2f}  {model_entry(name).published}")
    print(f"(num_classes={args.num_classes}; FLOPs counted by torch.utils.flop_counter, a multiply-add = 2 FLOPs)")
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    from .attention import attention_for_checkpoint
    from .train import resolve_device

    try:
        row, col = (int(v) for v in args.patch.split(","))
    except ValueError:
        raise SeglabError(f"--patch {args.patch!r}: expected ROW,COL, e.g. --patch 3,4") from None
    maps = attention_for_checkpoint(args.checkpoint, args.image, (row, col), args.out, args.blocks,
                                    str(resolve_device(args.device)))
    print(f"wrote {args.out}: attention of patch {row},{col} for {', '.join(maps)}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.action == "download":
        if args.name != "oxford-pets":
            raise SeglabError(f"only oxford-pets can be downloaded, not {args.name!r}")
        from .data.oxford_pets import download_oxford_pets

        root = download_oxford_pets(args.root, mirror=args.mirror, quiet=args.quiet)
        print(f"oxford-pets is ready in {root}")
        return 0
    from .data import DATASETS, data_home

    print(f"data home: {data_home()}  (set SEGLAB_DATA to change)")
    print("datasets: " + ", ".join(DATASETS))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .config import RECIPES

    p = argparse.ArgumentParser(prog="seglab", description="Efficient semantic segmentation in PyTorch.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="train a small ViT on the synthetic dataset (CPU, a few minutes)")
    d.add_argument("--out-dir", default="runs")
    d.add_argument("--epochs", type=int, default=None)
    d.add_argument("--device", default="auto")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train a model (the article's recipe by default)")
    t.add_argument("--config", help="a config.yaml (e.g. RUN_DIR/config.yaml) to repeat; flags override it")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run where it stopped")
    t.add_argument("--recipe", choices=sorted(RECIPES), help="a named preset of training options")
    _add_config_flags(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="exact metrics of a checkpoint over a whole split")
    e.add_argument("checkpoint", metavar="RUN_DIR_OR_CHECKPOINT")
    e.add_argument("--dataset")
    e.add_argument("--split")
    e.add_argument("--data-root")
    e.add_argument("--download", action="store_true")
    e.add_argument("--batch-size", type=_positive_int, default=64)
    e.add_argument("--device", default="auto")
    e.add_argument("--skip-bad", action="store_true")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="masks and overlays for images at their original size")
    pr.add_argument("checkpoint", metavar="CHECKPOINT")
    pr.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    pr.add_argument("--out", required=True, metavar="DIR")
    pr.add_argument("--batch-size", type=_positive_int, default=16)
    pr.add_argument("--device", default="auto")
    pr.add_argument("--skip-bad", action="store_true", help="leave out images that cannot be read, and list them")
    pr.add_argument("--quiet", action="store_true")
    pr.set_defaults(func=cmd_predict)

    tr = sub.add_parser("trace", help="the shape of the tensor after every step of a model")
    tr.add_argument("--model", default="vit")
    tr.add_argument("--num-classes", type=int, default=3)
    tr.add_argument("--image-size", type=int, default=128)
    tr.add_argument("--embed-size", type=int)
    tr.add_argument("--num-blocks", type=int)
    tr.add_argument("--num-heads", type=int)
    tr.add_argument("--patch-size", type=int)
    tr.add_argument("--model-option", "-O", action="append", metavar="KEY=VALUE")
    tr.add_argument("--figure", metavar="PNG", help="also draw the journey as a picture")
    tr.set_defaults(func=cmd_trace)

    m = sub.add_parser("models", help="the registered models: parameters, GFLOPs, published figures")
    m.add_argument("--num-classes", type=int, default=3)
    m.set_defaults(func=cmd_models)

    at = sub.add_parser("attention", help="where a patch attends, per head, for chosen blocks (vit*, segformer-*)")
    at.add_argument("checkpoint", metavar="CHECKPOINT")
    at.add_argument("image", metavar="IMAGE")
    at.add_argument("--patch", required=True, metavar="ROW,COL", help="ViT: patch grid cell; SegFormer: 32-px cell")
    at.add_argument("--blocks", help="ViT: block indices (0,5,11); SegFormer: stage.block (0.1,3.2); default: a few")
    at.add_argument("--out", default="attention.png")
    at.add_argument("--device", default="auto")
    at.set_defaults(func=cmd_attention)

    da = sub.add_parser("data", help="download datasets, show where data lives")
    da.add_argument("action", choices=["download", "info"])
    da.add_argument("name", nargs="?", default="oxford-pets")
    da.add_argument("--root", help="where to put it (default: $SEGLAB_DATA/oxford-iiit-pet)")
    da.add_argument("--mirror", help="base URL to download from instead of the VGG site")
    da.add_argument("--quiet", action="store_true")
    da.set_defaults(func=cmd_data)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SeglabError as e:
        if args.debug:
            raise
        print(f"seglab: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system said no (permissions, a full disk, a path that is a file): name it
        if args.debug:
            raise
        hint = " (the disk is full; free some space)" if e.errno == 28 else ""
        print(f"seglab: error: {e}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seglab: interrupted; a run can be continued with `seglab train --resume RUN_DIR`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
