"""Each of seglab's speed-ups measured on its own: the training step before and after, in one process.

    python benchmarks/speedups.py                                  # all but compile
    python benchmarks/speedups.py --experiments compile --steps 5  # torch.compile (minutes on a CPU)

Experiments (each a pair of seglab training steps that differ in one thing, same model, batch and data):

- segformer-decoder: SegFormer's all-MLP decoder computed as HF does (Linear per stage, upsample, concat, 1x1
  fuse conv) vs seglab's composed form (each stage's Linear folded into its block of the fuse conv, applied at
  the stage's resolution, upsampled and summed: the same function, src/seglab/models/segformer.py).
- fused-optimizer: Adam as torch builds it by default on a CPU (a for-loop over the parameters) vs the fused
  kernel seglab now asks for on CPU as well as CUDA (src/seglab/train.py, make_optimizer); the article's ViT.
- channels-last: the SegNet CNN in NCHW vs channels_last memory format, model and inputs (train.py,
  prepare_model), fp32 and (where native) bf16.
- bf16-autocast: fp32 vs bf16 autocast on the CPU (opt-in there with --amp bf16; the default on CUDA); the
  article's ViT and SegFormer-B0.
- device-augmentation: the data path alone: the notebook's per-sample JPEG decoding + PIL transforms in a
  DataLoader vs seglab's uint8 tensors indexed and augmented as a batch (flip + contrast) on the device.
- compile: eager vs torch.compile (config.compile), SegFormer-B0, the small ViT and the article's ViT; the
  compile time (first step) is reported.

Rounds alternate the order of the pair; the table gives the medians and after/before.
Results: benchmarks/results/speedups-<device>[-tag].{json,md}.
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

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from benchmarks.naive import PilSegmentationFolder, folder_pairs, naive_loader, write_jpeg_folder  # noqa: E402
from benchmarks.throughput import SeglabContender, train_rate, decode_once  # noqa: E402
from seglab.data.augment import AugmentConfig, augment_batch  # noqa: E402

EXPERIMENTS = ("segformer-decoder", "fused-optimizer", "channels-last", "bf16-autocast", "device-augmentation",
               "compile")


def _pairs(model: str, base_amp: str, size: int, batch: int, device: torch.device, data, **changes: Any):
    """(before, after) seglab contenders that differ in the keyword given as (before, after)."""
    (key, (before, after)), = changes.items()
    optimizer = "adamw" if model.startswith("segformer") else "adam"

    def make(value: Any) -> SeglabContender:
        kw = {key: value}
        a = kw.pop("amp", base_amp)
        decoder = kw.pop("decoder", None)
        c = SeglabContender(model, size, batch, device, a, data, optimizer, **kw)
        if decoder == "concat":
            c.model.decoder.forward = c.model.decoder.forward_concat  # HF's (and seglab's earlier) decoder
        return c

    return make(before), make(after)


def _warm(c: Any, steps: int) -> float:
    t0 = time.perf_counter()
    c.step()
    c.finish()
    first = time.perf_counter() - t0
    for _ in range(steps - 1):
        c.step()
    c.finish()
    return first


def _data_rate(fn: Callable[[], int], steps: int) -> Callable[[], float]:
    def block() -> float:
        t0 = time.perf_counter()
        n = sum(fn() for _ in range(steps))
        return n / (time.perf_counter() - t0)

    return block


def experiment(name: str, args: argparse.Namespace, device: torch.device, pairs: list,
               log: Callable[[str], None]) -> list[dict]:
    size, batch = args.size, args.batch
    data = decode_once(pairs, size)
    bf16 = common.cpu_bf16_native() if device.type == "cpu" else True
    specs: list[tuple[str, str, dict[str, Any]]] = []  # (model, amp, change)
    if name == "segformer-decoder":
        specs = [("segformer-b0", "off", {"decoder": ("concat", "composed")})]
        if bf16:
            specs.append(("segformer-b0", "bf16", {"decoder": ("concat", "composed")}))
    elif name == "fused-optimizer":
        specs = [("vit", "off", {"fused": (False, True)})]
    elif name == "channels-last":
        specs = [("segnet", "off", {"channels_last": (False, True)})]
        if bf16:
            specs.append(("segnet", "bf16", {"channels_last": (False, True)}))
    elif name == "bf16-autocast":
        specs = [("vit", "off", {"amp": ("off", "bf16")}), ("segformer-b0", "off", {"amp": ("off", "bf16")})]
    elif name == "compile":
        specs = [("segformer-b0", "off", {"compile_model": (False, True)}),
                 ("vit-small", "off", {"compile_model": (False, True)}),
                 ("vit", "off", {"compile_model": (False, True)})]
    rows = []
    if name == "device-augmentation":
        loader = naive_loader(PilSegmentationFolder(pairs, size), batch)
        state = {"it": iter(loader)}

        def notebook() -> int:
            try:
                x, _ = next(state["it"])
            except StopIteration:
                state["it"] = iter(loader)
                x, _ = next(state["it"])
            return x.shape[0]

        images, masks = data[0].to(device), data[1].to(device)
        gen = torch.Generator(device=device).manual_seed(0)
        aug = AugmentConfig()

        def seglab_batch() -> int:
            b = torch.randint(0, len(images), (batch,)).to(device)
            x, y = augment_batch(images[b], masks[b], aug, gen)
            common.sync(device)
            return x.shape[0]

        res = common.interleaved({"before": _data_rate(notebook, args.steps * 4),
                                  "after": _data_rate(seglab_batch, args.steps * 4)}, args.rounds)
        rows.append({"experiment": name, "model": "(data only)", "precision": "-", "size": size, "batch": batch,
                     "before": "notebook: per-sample JPEG decode + PIL resize/flip/contrast, DataLoader",
                     "after": "seglab: cached uint8 batch, flip + contrast on the device",
                     "before_images_per_s": common.summary(res["before"]),
                     "after_images_per_s": common.summary(res["after"])})
    for model, amp, change in specs:
        if args.models and model not in args.models:
            continue
        (key, (b, a)), = change.items()
        log(f"{name}: {model} ({amp}) {key} {b} -> {a}")
        before, after = _pairs(model, amp, size, batch, device, data, **change)
        first = {"before": _warm(before, args.warmup), "after": _warm(after, args.warmup)}
        res = common.interleaved({"before": train_rate(before, args.steps), "after": train_rate(after, args.steps)},
                                 args.rounds)
        precision = "fp32 -> bf16" if key == "amp" else "bf16" if amp == "bf16" else "fp32"
        row = {"experiment": name, "model": model, "precision": precision, "size": size,
               "batch": batch, "before": f"{key}={b}", "after": f"{key}={a}",
               "before_images_per_s": common.summary(res["before"]),
               "after_images_per_s": common.summary(res["after"]), "first_step_s": first}
        rows.append(row)
        del before, after
    for row in rows:
        row["speedup"] = row["after_images_per_s"]["median"] / row["before_images_per_s"]["median"]
        log(f"  {row['model']} {row['before']} -> {row['after']}: {row['before_images_per_s']['median']:.3g} -> "
            f"{row['after_images_per_s']['median']:.3g} img/s ({row['speedup']:.2f}x)")
    return rows


def to_markdown(result: dict) -> str:
    env = result["environment"]
    lines = [f"Speed-ups on {common.settings_line(env)}.", "", f"Command: `{result['command']}`", ""]
    headers = ["experiment", "model", "precision", "size", "batch", "before", "after", "before img/s",
               "after img/s", "after / before"]
    rows = [[r["experiment"], r["model"], r["precision"], r["size"], r["batch"], r["before"], r["after"],
             r["before_images_per_s"]["median"], r["after_images_per_s"]["median"], f"{r['speedup']:.2f}x"]
            for r in result["rows"]]
    lines.append(common.markdown_table(headers, rows))
    lines += ["", "Training images/s (data only for device-augmentation): medians of interleaved rounds; every "
              "round is in the JSON. compile's first_step_s (JSON) includes the compilation."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiments", default=",".join(e for e in EXPERIMENTS if e != "compile"))
    p.add_argument("--models", default="", help="only these models (comma-separated)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    p.add_argument("--out", default=str(common.RESULTS))
    p.add_argument("--tag", default="")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    a.models = [m for m in a.models.split(",") if m]
    device = common.resolve_device(a.device)
    env = common.environment(device)
    log = print
    log(f"device: {env['device_name']}")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="seglab-speedups-") as tmp:
        pairs = folder_pairs(write_jpeg_folder(Path(tmp) / "jpegs", a.samples, size=448))
        for name in a.experiments.split(","):
            if name not in EXPERIMENTS:
                p.error(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
            rows += experiment(name, a, device, pairs, log)
    command = "python benchmarks/speedups.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"benchmark": "speedups", "command": command.strip(), "environment": env,
              "settings": {k: v for k, v in vars(a).items()}, "rows": rows,
              "load_average_at_end": common.load_average()}
    markdown = to_markdown(result)
    log("\n" + markdown)
    stem = f"speedups-{device.type}" + (f"-{a.tag}" if a.tag else "")
    paths = common.save_results(result, markdown, a.out, stem)
    log(f"wrote {paths[0]} and {paths[1]}")
    return result


if __name__ == "__main__":
    main()
