"""`seglab` sub-commands: parse, call the library, print. Errors a user can cause exit with code 2 and one message.

A thin skin that imports lazily: `import seglab.cli` and building the parser import no torch (the train options,
whose model list needs the registry, are added only when `seglab train` is parsed), so commands that need no torch
can run without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Any, get_type_hints

import yaml

from .errors import SeglabError


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


def _numbers(kind: type) -> Callable[[str], list[Any]]:
    """An argparse type: "0.5,2.0" or "0.5" -> a list of kind."""
    def parse(text: str) -> list[Any]:
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a list of {kind.__name__}s") from None
    return parse


class _Flatten(argparse.Action):
    """--scale-range 0.5 2.0 and --scale-range 0.5,2.0 both store [0.5, 2.0]."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        setattr(namespace, self.dest, [v for part in values for v in part])


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, its help and choices from the field's metadata; defaults suppressed so we
    know which were given explicitly."""
    from .config import TrainConfig, choices_of

    hints = get_type_hints(TrainConfig)
    g = p.add_argument_group("training options (fields of TrainConfig; defaults: the article's recipe)")
    for f in dataclasses.fields(TrainConfig):
        if not f.metadata.get("flag", True):
            continue
        flag = "--" + f.name.replace("_", "-")
        text = str(hints[f.name])
        default = f.default if f.default not in (dataclasses.MISSING, None) else "unset"
        choices = choices_of(f)
        extra = [f"choices: {', '.join(choices)}" + (f" or {f.metadata['pattern'][1]}" if f.metadata["pattern"]
                                                      else "")] if choices else []
        low, high = f.metadata["low"], f.metadata["high"]
        if low is not None:
            end = "inf)" if high is None else f"{high}]"
            extra.append(f"range: {'(' if f.metadata['low_open'] else '['}{low}, {end}")
        help_text = f"{f.metadata['help']} ({'; '.join([*extra, f'default: {default}'])})".replace("%", "%%")
        if hints[f.name] is bool:
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
            continue
        kind = int if ("int" in text and "float" not in text) else float if "float" in text else str
        if "list" in text:  # --crop-size 256 256, --scale-range 0.5,2.0 or 0.5 2.0
            g.add_argument(flag, type=_numbers(kind), nargs="+", action=_Flatten, default=argparse.SUPPRESS,
                           metavar=f.name.upper(), help=help_text)
            continue
        g.add_argument(flag, type=kind, default=argparse.SUPPRESS, metavar=f.name.upper(), help=help_text)
    g.add_argument("--model-option", "-O", action="append", metavar="KEY=VALUE",
                   help="a model config override, e.g. -O embed_size=512 (repeatable)")


class _LazyParser(argparse.ArgumentParser):
    """A sub-command's parser whose options are added when it is first used (parsed, or asked for help)."""

    def __init__(self, *args: Any, populate: Callable[[argparse.ArgumentParser], None] | None = None,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._populate = populate

    def _ready(self) -> None:
        if self._populate is not None:
            populate, self._populate = self._populate, None
            populate(self)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def, override]
        self._ready()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._ready()
        return super().format_help()


_SHARED: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "device": (("--device",), dict(default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")),
    "quiet": (("--quiet",), dict(action="store_true", help="no progress bars")),
    "batch_size": (("--batch-size",), dict(type=None, help="images per batch")),  # type and default per command
    "skip_bad": (("--skip-bad",), dict(action="store_true", help="leave out images that cannot be read, and list "
                                                                  "them")),
}


def _shared(*names: str, batch_size: int = 64) -> argparse.ArgumentParser:
    """A parent parser with the options several sub-commands share (device, quiet, batch size, skip-bad)."""
    parent = argparse.ArgumentParser(add_help=False)
    for name in names:
        flags, kwargs = _SHARED[name]
        if name == "batch_size":
            kwargs = dict(kwargs, type=_positive_int, default=batch_size,
                          help=f"{kwargs['help']} (default: {batch_size})")
        parent.add_argument(*flags, **kwargs)
    return parent


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("seglab")
    except Exception:  # noqa: BLE001 - not installed (a source checkout on PYTHONPATH)
        from . import __version__

        return __version__


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
    """The summary metrics, then IoU and Dice per class (n/a for a class absent from the split)."""
    from .metrics import format_metric

    for k in ("pixel_accuracy", "article_iou", "miou"):
        if k in m:
            print(f"  {k:<16} {format_metric(float(m[k]))}")
    for k in [k for k in m if k.startswith("iou_")]:
        name = k[len("iou_"):]
        iou, dice = float(m[k]), float(m.get(f"dice_{name}", "nan"))
        absent = " (absent from the split)" if iou != iou and dice != dice else ""
        print(f"  {k:<16} {format_metric(iou)}   dice {format_metric(dice)}{absent}")


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed as dist
    from .train import RESUME_CHANGES, resolve_config, train

    if args.resume:
        given = {k: getattr(args, k) for k in RESUME_CHANGES if hasattr(args, k)}
        result = train(dataclasses.replace(resolve_config(resume=args.resume), **given), resume=args.resume)
    else:
        result = train(_config_from_args(args))
    if dist.is_main():
        print(f"run directory: {result.run_dir}")
        _print_metrics(result.metrics)
    dist.shutdown()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .config import TrainConfig, apply_recipe
    from .train import train

    values = dict(out_dir=args.out_dir, quiet=args.quiet, device=args.device)
    if args.epochs is not None:
        values["epochs"] = args.epochs
    t0 = time.perf_counter()
    result = train(TrainConfig.from_dict(apply_recipe(values, "demo"), source="demo"))
    seconds = time.perf_counter() - t0
    run = result.run_dir
    print(f"demo: trained a small ViT on the synthetic dataset in {seconds:.0f} s")
    print(f"  final pixel accuracy {result.metrics['pixel_accuracy']:.4f}, mIoU {result.metrics['miou']:.4f}")
    print(f"  run directory: {run}")
    print(f"  metrics:  {run / 'metrics.csv'}")
    print(f"  figures:  {run / 'figures'} (epoch_NNN.png, progress.gif, curves.png)")
    print(f"  weights:  {run / 'checkpoints' / 'best.safetensors'}")
    return 0


def _run_config(checkpoint: str) -> dict[str, Any]:
    """The config.yaml of the run a checkpoint (or run directory) belongs to, as a dict; {} when there is none."""
    from .run import find_run_dir

    run = find_run_dir(checkpoint)
    if run is None:
        return {}
    try:
        values = run.read_config()
    except SeglabError:
        return {}
    return dict(values, run_dir=str(run.path))


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .checkpoint import load_model
    from .data import DEFAULT_SPLITS, build_dataset
    from .device import resolve_device
    from .evaluate import evaluate, write_confusion
    from .inference import Geometry

    device = resolve_device(args.device)
    model, header = load_model(args.checkpoint, device)
    run_cfg = _run_config(args.checkpoint)
    dataset = args.dataset or header.get("dataset") or run_cfg.get("dataset")
    if dataset is None:
        raise SeglabError("--dataset is required: this checkpoint does not record its dataset")
    same_data = dataset == run_cfg.get("dataset")
    root = args.data_root or (run_cfg.get("data_root") if same_data else None)
    split = args.split or (run_cfg.get("val_split") if same_data else None) or DEFAULT_SPLITS.get(dataset,
                                                                                                ("", "val"))[1]
    options: dict[str, Any] = {}
    if dataset == "folder":
        options["ignore_index"] = args.ignore_index if args.ignore_index is not None else \
            run_cfg.get("ignore_index", 255)
        if same_data and run_cfg.get("masks") and args.ignore_index is None and args.data_root in (None, root):
            options["mask_format"] = run_cfg["masks"]  # read the masks as the run did
    geometry = Geometry.from_dict(header.get("geometry") or {
        "image_size": int(header.get("image_size", header["model"]["image_size"])),
        "interpolation": header.get("interpolation", "nearest")})
    protocol = args.protocol or geometry.protocol
    inference = _inference_config(args, batch_size=args.batch_size)
    if protocol == "article" and (args.mode != "whole" or args.tta):
        raise SeglabError("--mode slide and --tta score at the masks' own size: add --protocol original")
    original = protocol == "original"
    ds = build_dataset(dataset, split, root=root, download=args.download,
                       image_size=None if original else geometry.image_size,
                       interpolation="bilinear" if original else header.get("interpolation", "nearest"),
                       skip_bad=args.skip_bad, quiet=args.quiet, **options)
    if ds.num_classes != header["model"]["num_classes"]:
        raise SeglabError(f"dataset {dataset} has {ds.num_classes} classes but the model predicts "
                          f"{header['model']['num_classes']}")
    print(f"masks: {ds.describe_masks()}")
    t0 = time.perf_counter()
    m = evaluate(model, ds, batch_size=args.batch_size, device=device, quiet=args.quiet, geometry=geometry,
                 inference=inference)
    cm = m.matrix
    secs = time.perf_counter() - t0
    print(f"{header['model']['name']} on {dataset}/{split} ({len(ds)} images, {secs:.1f} s, "
          f"{len(ds) / secs:.1f} img/s)")
    scored = (f"original: at the masks' own size ({int(cm.matrix.sum()):,} labelled pixels), "
              f"{inference.describe()}" if original else f"article: on {geometry.image_size}x{geometry.image_size} "
              "squares (images and masks resized)")
    print(f"protocol {scored}")
    _print_metrics(m)
    if ds.skipped:
        print(f"skipped {len(ds.skipped)} bad file(s): " + ", ".join(s for s, _ in ds.skipped))
    out = Path(args.out) if args.out else (Path(run_cfg["run_dir"]) / "eval" / f"{dataset}-{split}" if run_cfg
                                           else Path(f"eval-{dataset}-{split}"))
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_confusion(cm, ds.class_names, out, f"{dataset}/{split}")
    except OSError as e:
        raise SeglabError(f"cannot write the confusion matrix into {out} ({e}); choose another --out") from None
    print(f"confusion matrix: {out / 'confusion.csv'}, {out / 'figures' / 'confusion.png'}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict

    results = predict(args.checkpoint, args.inputs, out_dir=args.out, batch_size=args.batch_size, device=args.device,
                      quiet=args.quiet, skip_bad=args.skip_bad, skip_existing=args.skip_existing, keep=False,
                      mode=args.mode, overlap=args.overlap, tta=args.tta)
    existing = f" ({results.existing} already there, left as they were)" if args.skip_existing else ""
    print(f"wrote {results.count} mask(s) and overlay(s) to {args.out}{existing}")
    if results.smaller_than_window:
        g = results.window
        print(f"note: {results.smaller_than_window} image(s) fit in one {g[0]}x{g[1]} window at the training scale: "
              "padded to it and run once (--mode whole does the same without the padding)")
    if results.skipped:
        print(f"skipped {len(results.skipped)} bad file(s):")
        for path, why in results.skipped:
            print(f"  {path}: {why}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx

    r = export_onnx(args.checkpoint, args.out, opset=args.opset, dynamic_hw=not args.fixed_size)
    hw = "dynamic" if r.dynamic_hw else f"fixed at the training size ({r.fallback_reason or 'asked'})"
    print(f"wrote {r.path} ({r.size_mb:.1f} MB): {r.model}, opset {r.opset}, batch dynamic, height and width {hw}; "
          f"{r.seconds:.1f} s")
    print("ONNX Runtime vs PyTorch, max abs diff of the logits: "
          + ", ".join(f"{k} (BxHxW) {v:.1e}" for k, v in r.parity.items()))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve.app import serve

    serve(args.model, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, device=args.device,
          inference=_inference_config(args))
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

    w = max(16, *(len(n) for n in list_models()))
    print(f"{'name':<{w}} {'params':>12} {'GFLOPs@128':>11} {'GFLOPs@512':>11}  published")
    for name in list_models():
        with torch.device("meta"):  # counts shapes only: no memory, no compute
            model = build_model(name, num_classes=args.num_classes)
        params = sum(p.numel() for p in model.parameters())
        g128, g512 = (model_flops(model, s) / 1e9 for s in (128, 512))
        print(f"{name:<{w}} {params:>12,} {g128:>11.2f} {g512:>11.2f}  {model_entry(name).published}")
    print(f"(num_classes={args.num_classes}; FLOPs counted by torch.utils.flop_counter, a multiply-add = 2 FLOPs)")
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    from .attention import attention_for_checkpoint
    from .device import resolve_device

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
        args.name = args.name or "oxford-pets"
        if args.name == "voc":
            from .data.voc import download_voc

            root = download_voc(args.root, mirror=args.mirror, quiet=args.quiet)
            print(f"voc is ready in {root}")
            return 0
        if args.name != "oxford-pets":
            raise SeglabError(f"only oxford-pets and voc can be downloaded, not {args.name!r}")
        from .data.oxford_pets import download_oxford_pets

        root = download_oxford_pets(args.root, mirror=args.mirror, quiet=args.quiet)
        print(f"oxford-pets is ready in {root}")
        return 0
    if args.action == "inspect":
        from .data.inspect import inspect_dataset

        if args.name is None:
            raise SeglabError("seglab data inspect needs a dataset name or a folder, e.g. seglab data inspect "
                              "path/to/my-data")
        report = inspect_dataset(args.name, dataset=args.dataset, out=args.out, image_size=args.image_size,
                                 quiet=args.quiet)
        print(report.render())
        if args.strict and report.problems:
            print(f"seglab: --strict: {len(report.problems)} problem(s) found", file=sys.stderr)
            return 1
        return 0
    from .data import DATASETS, data_home

    print(f"data home: {data_home()}  (set SEGLAB_DATA to change)")
    print("datasets: " + ", ".join(DATASETS))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_runs
    from .device import resolve_device

    result = compare_runs(args.runs, args.out, num_images=args.num_images, device=str(resolve_device(args.device)))
    print(result.markdown, end="")
    for note in result.notes:
        print(note)
    print(f"wrote {', '.join(str(p) for p in result.files.values())}")
    return 0


def _inference_flags(p: argparse.ArgumentParser) -> None:
    """--mode, --overlap and --tta: how each image goes through the model (inference.py)."""
    g = p.add_argument_group("inference (docs/evaluation.md, \"Whole, slide and TTA\")")
    g.add_argument("--mode", choices=["whole", "slide"], default="whole",
                   help="whole: the image at the training scale at once; slide: windows of the training crop, "
                        "blended with a Gaussian weight (large images; default: whole)")
    g.add_argument("--overlap", type=float, default=0.25, help="slide: the share of a window its neighbour covers "
                                                               "again, in [0, 1) (default: 0.25)")
    g.add_argument("--tta", metavar="SPEC", help="test-time augmentation, softmax averaged over the views: flip, "
                                                "scales=0.75,1.0,1.25, or flip,scales=... (default: none)")


def _inference_config(args: argparse.Namespace, batch_size: int = 8):
    from .inference import InferenceConfig, parse_tta

    flip, scales = parse_tta(args.tta)
    return InferenceConfig(mode=args.mode, overlap=args.overlap, flip=flip, scales=scales, batch_size=batch_size)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seglab", description="Efficient semantic segmentation in PyTorch.")
    p.add_argument("--version", action="version", version=f"seglab {_version()}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_LazyParser)

    d = sub.add_parser("demo", parents=[_shared("device", "quiet")],
                       help="train a small ViT on the synthetic dataset (CPU, a few minutes)")
    d.add_argument("--out-dir", default="runs", help="the folder the run directory is made in (default: runs)")
    d.add_argument("--epochs", type=int, default=None, help="epochs (default: the demo recipe's 10)")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train a model (the article's recipe by default)", populate=_train_options)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", parents=[_shared("device", "quiet", "batch_size", "skip_bad", batch_size=64)],
                       help="exact metrics of a checkpoint over a whole split")
    e.add_argument("checkpoint", metavar="RUN_DIR_OR_CHECKPOINT", help="a run directory (its best checkpoint) or "
                                                                       "a .safetensors checkpoint")
    e.add_argument("--dataset", help="the dataset (default: the checkpoint's)")
    e.add_argument("--split", help="the split (default: the run's validation split, else the dataset's own: test "
                                   "for oxford-pets, val for the others)")
    e.add_argument("--data-root", help="where the dataset lives (default: the run's)")
    e.add_argument("--download", action="store_true", help="download the dataset when it is missing")
    e.add_argument("--ignore-index", type=int, help="folder dataset: the mask value read as ignore (default: the "
                                                    "run's, else 255)")
    e.add_argument("--out", metavar="DIR", help="where confusion.csv and figures/confusion.png go (default: "
                                                "RUN_DIR/eval/DATASET-SPLIT, else ./eval-DATASET-SPLIT)")
    e.add_argument("--protocol", choices=["article", "original"],
                   help="article: score on IMAGE_SIZE squares (the article's figures); original: at the masks' own "
                        "size (default: the protocol the model was trained with)")
    _inference_flags(e)
    e.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", parents=[_shared("device", "quiet", "batch_size", "skip_bad", batch_size=16)],
                        help="masks and overlays for images at their original size")
    pr.add_argument("checkpoint", metavar="MODEL", help="a run directory, a .safetensors checkpoint, or an .onnx "
                                                        "file (run on ONNX Runtime; torch not needed)")
    pr.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="images, or folders of images")
    pr.add_argument("--out", required=True, metavar="DIR", help="where the masks and overlays are written")
    pr.add_argument("--skip-existing", action="store_true",
                    help="leave out images whose mask and overlay are already in --out (resume a run)")
    _inference_flags(pr)
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser("export", help="export a model to ONNX (dynamic batch and size, metadata, parity checked)")
    ex.add_argument("checkpoint", metavar="RUN_DIR_OR_CHECKPOINT", help="a run directory (its best checkpoint) or "
                                                                         "a .safetensors checkpoint")
    ex.add_argument("--format", choices=["onnx"], default="onnx", help="the export format (default: onnx)")
    ex.add_argument("--out", required=True, metavar="FILE.onnx", help="the file to write")
    ex.add_argument("--opset", type=_positive_int, default=18, help="the ONNX opset (default: 18)")
    ex.add_argument("--fixed-size", action="store_true",
                    help="fix height and width at the training size (only the batch stays dynamic)")
    ex.set_defaults(func=cmd_export)

    sv = sub.add_parser("serve", parents=[_shared("device")],
                        help="an HTTP API and a page to try a model (FastAPI on uvicorn)")
    sv.add_argument("model", metavar="RUN_DIR_OR_CHECKPOINT_OR_ONNX",
                    help="a run directory, a .safetensors checkpoint or an .onnx file (no torch needed)")
    sv.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    sv.add_argument("--port", type=_positive_int, default=8000, help="the port (default: 8000)")
    _inference_flags(sv)
    sv.add_argument("--max-upload-mb", type=float, default=20.0,
                    help="uploads larger than this are refused with 413 (default: 20)")
    sv.set_defaults(func=cmd_serve)

    tr = sub.add_parser("trace", help="the shape of the tensor after every step of a model")
    tr.add_argument("--model", default="vit", help="a registered model (default: vit; `seglab models` lists them)")
    tr.add_argument("--num-classes", type=int, default=3, help="classes (default: 3)")
    tr.add_argument("--image-size", type=int, default=128, help="the input's side in pixels (default: 128)")
    for name in ("embed_size", "num_blocks", "num_heads", "patch_size"):
        tr.add_argument("--" + name.replace("_", "-"), type=int, help=f"ViT: the model's {name} (the same as -O "
                                                                      f"{name}=N)")
    tr.add_argument("--model-option", "-O", action="append", metavar="KEY=VALUE",
                    help="a model config override (repeatable)")
    tr.add_argument("--figure", metavar="PNG", help="also draw the journey as a picture")
    tr.set_defaults(func=cmd_trace)

    m = sub.add_parser("models", help="the registered models: parameters, GFLOPs, published figures")
    m.add_argument("--num-classes", type=int, default=3, help="classes the models are built for (default: 3)")
    m.set_defaults(func=cmd_models)

    at = sub.add_parser("attention", parents=[_shared("device")],
                        help="where a patch attends, per head, for chosen blocks (vit*, segformer-*)")
    at.add_argument("checkpoint", metavar="CHECKPOINT", help="a run directory or a .safetensors checkpoint")
    at.add_argument("image", metavar="IMAGE", help="the image to look at")
    at.add_argument("--patch", required=True, metavar="ROW,COL", help="ViT: patch grid cell; SegFormer: 32-px cell")
    at.add_argument("--blocks", help="ViT: block indices (0,5,11); SegFormer: stage.block (0.1,3.2); default: a few")
    at.add_argument("--out", default="attention.png", help="the figure to write (default: attention.png)")
    at.set_defaults(func=cmd_attention)

    da = sub.add_parser("data", parents=[_shared("quiet")],
                        help="download datasets (oxford-pets, voc), inspect one, show where data lives")
    da.add_argument("action", choices=["download", "info", "inspect"],
                    help="download a dataset; inspect DATASET_OR_FOLDER (what it holds, how its masks read, its "
                         "problems, a preview); or show where data lives")
    da.add_argument("name", nargs="?", default=None, metavar="DATASET_OR_FOLDER",
                    help="download: oxford-pets (default) or voc; inspect: a dataset name or a folder")
    da.add_argument("--root", help="download: where to put it (default: $SEGLAB_DATA/oxford-iiit-pet or "
                                   "$SEGLAB_DATA/voc)")
    da.add_argument("--mirror", help="download: base URL to download from instead of the official site")
    da.add_argument("--dataset", help="inspect: read the folder as this dataset (default: guessed from its layout)")
    da.add_argument("--out", metavar="DIR", default="seglab-inspect",
                    help="inspect: where preview.png and report.json go (default: seglab-inspect)")
    da.add_argument("--image-size", type=_positive_int, default=128,
                    help="inspect: the size the dataset is cached at, as training reads it (default: 128)")
    da.add_argument("--strict", action="store_true", help="inspect: exit with code 1 when a problem is found")
    da.set_defaults(func=cmd_data)

    co = sub.add_parser("compare", parents=[_shared("device")],
                        help="runs side by side: a table, validation curves, predictions of the same images")
    co.add_argument("runs", nargs="+", metavar="RUN_DIR")
    co.add_argument("--out", default="compare", metavar="DIR",
                    help="where compare.md, compare.csv, curves.png and predictions.png go (default: compare)")
    co.add_argument("--num-images", type=_positive_int, default=7, help="validation images drawn (default: 7)")
    co.set_defaults(func=cmd_compare)
    return p


def _train_options(t: argparse.ArgumentParser) -> None:
    """`seglab train`'s options: --config, --resume, --recipe and one flag per TrainConfig field."""
    from .config import RECIPES, TrainConfig

    t.add_argument("--config", help="a config.yaml (e.g. RUN_DIR/config.yaml) to repeat; flags override it")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run where it stopped (flags that may "
                                                      "change: --epochs, --quiet)")
    t.add_argument("--recipe", choices=sorted(RECIPES),
                   help=f"{TrainConfig.__dataclass_fields__['recipe'].metadata['help']} (choices: "
                        f"{', '.join(sorted(RECIPES))})")
    _add_config_flags(t)


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
        from .atomic import is_disk_full

        hint = " (the disk is full; free some space)" if is_disk_full(e) else ""
        print(f"seglab: error: {e}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seglab: interrupted; a run can be continued with `seglab train --resume RUN_DIR`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
