"""Training and inference throughput of seglab's models beside their peers, measured in one process.

    python benchmarks/throughput.py --quick                     # the whole CPU run in a few minutes
    python benchmarks/throughput.py --models vit,segformer-b0 --sizes 128 --batch 8 --steps 3 --rounds 5
    python benchmarks/throughput.py --compile                   # adds a torch.compile'd seglab row

For each model and size, every contender trains on the same batch size and image size:

- seglab, as `seglab train` runs it: the split held as uint8 on the device and augmented there (flip +
  contrast, batched), cross-entropy on logits at the input size, the optimizer seglab builds (fused on CPU
  and CUDA), no host synchronisation inside the step; one row per precision (`--amp`: fp32 = "off", and bf16
  autocast where the device computes bf16 natively) and optionally a compiled row (`--compile`).
- the peers: for `vit`, `vit-p8` and `segnet`, the article's notebook (benchmarks/naive.py): its own model
  code (nn.MultiheadAttention + nn.Unfold/nn.Fold for the ViT; the same CNN for segnet) fed by a torch
  DataLoader that decodes a JPEG and a PNG per sample and applies PIL transforms (resize NEAREST, flip,
  contrast), fp32, plain Adam, `loss.item()` every step. For `segformer-*`, HF transformers'
  SegformerForSemanticSegmentation with the same config, AdamW, its H/4 logits upsampled bilinearly to the
  input size + cross-entropy, fed by the same device-side data as seglab (so the ratio is the model and
  optimizer alone), at seglab's default precision for the device (`--peer-amp`).

Timed blocks of `--steps` steps run in `--rounds` rounds that alternate the contenders' order, after
`--warmup` steps each, with torch.cuda.synchronize on CUDA; the tables give the median round (the JSON has
every round). Inference: eval mode, inference_mode (no_grad for the notebook), batch 1 (latency = median
time per call) and a large batch (`--infer-batch`). Peak memory: CUDA max_memory_allocated above what was
allocated before the contender was built; CPU: growth of the resident set (sampled, approximate).
MFU: training FLOPs (FlopCounterMode on one step) x steps/s over a dense matmul rate measured here in the
contender's precision.

At sizes above 128 the batch is scaled by (128/size)^2 (at least 1), keeping the pixels per step.
Results: benchmarks/results/throughput-<device>[-quick][-tag].{json,md}.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from benchmarks.naive import (  # noqa: E402
    ArticleViT,
    PilSegmentationFolder,
    folder_pairs,
    naive_loader,
    naive_train_step,
    write_jpeg_folder,
)
from seglab.config import TrainConfig  # noqa: E402
from seglab.data.augment import AugmentConfig, augment_batch  # noqa: E402
from seglab.data.cache import resize_pair  # noqa: E402
from seglab.models import build_model  # noqa: E402
from seglab.device import autocast_for  # noqa: E402
from seglab.losses import build_loss  # noqa: E402
from seglab.train import make_optimizer, prepare_model, train_step  # noqa: E402

ALL_MODELS = ("vit", "vit-p8", "segformer-b0", "segformer-b2", "segnet")
LR = 1e-4  # the step's cost does not depend on it; small so that nothing diverges while timing


@dataclass
class Settings:
    models: list[str]
    sizes: list[int]
    batch: int = 8
    infer_batch: int = 32
    steps: int = 3
    warmup: int = 2
    rounds: int = 3
    infer_reps: int = 5
    amps: list[str] = field(default_factory=lambda: ["auto"])
    peer_amp: str = "auto"
    compile: bool = False
    workers: int = 0
    data_root: str | None = None
    samples: int = 64
    device: str = "auto"
    quick: bool = False
    skip: list[str] = field(default_factory=list)  # "model@size" pairs left out as not sensible here
    model_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per model name: build_model overrides
    jpeg_size: int = 448  # side of the synthetic JPEGs the notebook path decodes
    matmul_size: int | None = None  # side of the matmul that measures the device's rate (default 2048; CUDA 8192)


def _amp_label(amp: str, device: torch.device) -> str:
    on = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    return "bf16" if on else "fp32"


# ---------------------------------------------------------------------------------------------------------
# Data


def load_pairs(settings: Settings, workdir: Path) -> list[tuple[Path, Path]]:
    """(jpeg, trimap png) files: the Oxford-IIIT Pet folder given, else synthetic pets written once (448x448,
    about the pixel count of an Oxford-IIIT Pet photo) so that the naive path decodes real files."""
    if settings.data_root:
        pairs = folder_pairs(settings.data_root)
        return pairs[: max(settings.samples, 1)]
    return folder_pairs(write_jpeg_folder(workdir / "jpegs", settings.samples, size=settings.jpeg_size))


def decode_once(pairs: list[tuple[Path, Path]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What seglab's cache does: decode and resize (NEAREST, the article's) once into uint8 arrays."""
    from PIL import Image

    images, masks = [], []
    for image_path, trimap_path in pairs:
        img, m = resize_pair(Image.open(image_path).convert("RGB"), np.asarray(Image.open(trimap_path)),
                             (size, size), "nearest")
        images.append(img.transpose(2, 0, 1))
        masks.append(m - 1)  # trimap 1..3 -> class 0..2
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))


# ---------------------------------------------------------------------------------------------------------
# Contenders: each trains with .step() and predicts with .infer(x); .finish() waits for the device.


class SeglabContender:
    """seglab's training step, as train.py runs it."""

    role = "seglab"

    def __init__(self, model_name: str, size: int, batch: int, device: torch.device, amp: str,
                 data: tuple[torch.Tensor, torch.Tensor], optimizer: str, compile_model: bool = False,
                 options: dict[str, Any] | None = None, channels_last: bool | None = None,
                 fused: bool | None = None):
        """channels_last / fused: None = what seglab's train() does; True / False force it (before/after runs)."""
        self.device, self.amp, self.batch = device, amp, batch
        self.name = f"seglab ({_amp_label(amp, device)}{', compiled' if compile_model else ''})"
        model = build_model(model_name, num_classes=3, image_size=size, **(options or {})).to(device)
        if channels_last is None:
            self.channels_last = prepare_model(model, device)
        else:
            self.channels_last = channels_last
            model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        self.model = model
        if fused is None:
            self.optimizer = make_optimizer(TrainConfig(optimizer=optimizer, lr=LR), model, device)
        else:
            cls = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
            self.optimizer = cls(model.parameters(), lr=LR, fused=fused or None)
        self.run = torch.compile(model) if compile_model else model
        self.images, self.masks = data[0].to(device), data[1].to(device)
        self.aug = AugmentConfig(hflip=0.5, contrast=0.3)
        self.loss_fn = build_loss("ce", "none")  # the article's loss
        self.gen = torch.Generator(device=device).manual_seed(0)
        self.order = torch.randperm(len(self.images)).to(device)
        self.pos = 0
        self.loss_sum = torch.zeros((), device=device)

    def _indices(self) -> torch.Tensor:
        if self.pos + self.batch > len(self.order):  # a new epoch's order, moved to the device once (as train.py)
            self.order, self.pos = torch.randperm(len(self.images)).to(self.device), 0
        b = self.order[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return b

    def step(self) -> None:
        b = self._indices()
        x, y = augment_batch(self.images[b], self.masks[b], self.aug, self.gen)  # (B, 3, H, W), (B, H, W)
        self.loss_sum += train_step(self.run, self.optimizer, x, y, self.loss_fn, self.device, self.amp,
                                    self.channels_last)  # train.py's own step

    def finish(self) -> None:
        self.loss_sum.item()  # the one host synchronisation, as train.py's every 20 steps
        common.sync(self.device)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast_for(self.device, self.amp):
            return self.run(x)

    def flops_step(self, x: torch.Tensor, y: torch.Tensor) -> int:
        return common.train_step_flops(lambda: self.model(x) if self.run is self.model else self.run(x), y)


class NotebookContender:
    """The article's notebook: its model, per-sample PIL data in a DataLoader, fp32, Adam, loss.item() per step."""

    role = "peer"

    def __init__(self, model: nn.Module, label: str, size: int, batch: int, device: torch.device,
                 pairs: list[tuple[Path, Path]], workers: int):
        self.device, self.batch = device, batch
        self.name = label
        self.model = model.to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.criterion = nn.CrossEntropyLoss()
        self.loader = naive_loader(PilSegmentationFolder(pairs, size), batch, workers)
        self.it = iter(self.loader)

    def _next(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)

    def step(self) -> None:
        inputs, targets = self._next()
        naive_train_step(self.model, self.optimizer, self.criterion, inputs, targets, self.device)

    def finish(self) -> None:
        common.sync(self.device)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(x)

    def flops_step(self, x: torch.Tensor, y: torch.Tensor) -> int:
        return common.train_step_flops(lambda: self.model(x), y)


class HFContender(SeglabContender):
    """HF transformers' SegformerForSemanticSegmentation: same config and data as seglab's, AdamW."""

    role = "peer"

    def __init__(self, model_name: str, size: int, batch: int, device: torch.device, amp: str,
                 data: tuple[torch.Tensor, torch.Tensor]):
        from transformers import SegformerConfig as HFConfig
        from transformers import SegformerForSemanticSegmentation

        from seglab.models.segformer import SegformerConfig

        cfg = SegformerConfig.from_variant(model_name, num_classes=3)
        hf_cfg = HFConfig(num_labels=3, hidden_sizes=list(cfg.hidden_sizes), depths=list(cfg.depths),
                          decoder_hidden_size=cfg.decoder_hidden_size, num_attention_heads=list(cfg.num_heads),
                          sr_ratios=list(cfg.sr_ratios), patch_sizes=list(cfg.patch_sizes),
                          strides=list(cfg.strides), mlp_ratios=[cfg.mlp_ratio] * len(cfg.depths),
                          drop_path_rate=cfg.drop_path_rate, hidden_dropout_prob=cfg.hidden_dropout,
                          attention_probs_dropout_prob=cfg.attention_dropout,
                          classifier_dropout_prob=cfg.classifier_dropout)
        self.device, self.amp, self.batch = device, amp, batch
        self.hf = SegformerForSemanticSegmentation(hf_cfg).to(device)
        self.name = f"HF transformers ({_amp_label(amp, device)}, {self.hf.config._attn_implementation} attention)"
        self.model = self.hf
        self.channels_last = False
        self.optimizer = torch.optim.AdamW(self.hf.parameters(), lr=LR)
        self.images, self.masks = data[0].to(device), data[1].to(device)
        self.aug = AugmentConfig(hflip=0.5, contrast=0.3)
        self.loss_fn = build_loss("ce", "none")  # the article's loss
        self.gen = torch.Generator(device=device).manual_seed(0)
        self.order = torch.randperm(len(self.images)).to(device)
        self.pos = 0
        self.loss_sum = torch.zeros((), device=device)

        def run(x: torch.Tensor) -> torch.Tensor:
            logits = self.hf(pixel_values=x).logits  # (B, C, H/4, W/4)
            return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

        self.run = run


# ---------------------------------------------------------------------------------------------------------
# Measuring


def train_rate(c: Any, steps: int) -> Callable[[], float]:
    def block() -> float:
        c.finish()
        t0 = time.perf_counter()
        for _ in range(steps):
            c.step()
        c.finish()
        return steps * c.batch / (time.perf_counter() - t0)

    return block


def _infer_rate(c: Any, x: torch.Tensor, reps: int) -> Callable[[], float]:
    """images/s of the median call among `reps` (each call synchronised)."""
    def block() -> float:
        times = []
        for _ in range(reps):
            common.sync(c.device)
            t0 = time.perf_counter()
            c.infer(x)
            common.sync(c.device)
            times.append(time.perf_counter() - t0)
        return x.shape[0] / sorted(times)[len(times) // 2]

    return block


def build_contenders(model_name: str, size: int, batch: int, settings: Settings, device: torch.device,
                     pairs: list[tuple[Path, Path]], data: tuple[torch.Tensor, torch.Tensor]) -> list[Any]:
    """The contenders of one case, each built lazily (see measure_case) so its memory can be measured."""
    optimizer = "adamw" if model_name.startswith("segformer") else "adam"
    options = settings.model_options.get(model_name, {})
    makers: list[Callable[[], Any]] = []
    for amp in settings.amps:
        makers.append(lambda amp=amp: SeglabContender(model_name, size, batch, device, amp, data, optimizer,
                                                      options=options))
    if settings.compile:
        amp = settings.amps[-1]
        makers.append(lambda: SeglabContender(model_name, size, batch, device, amp, data, optimizer, True, options))
    if model_name.startswith("vit"):
        def notebook_vit() -> NotebookContender:
            a = build_model(model_name, num_classes=3, image_size=size, **options).args  # the same config
            if a.head != "linear":
                raise ValueError(f"the article's notebook has only the linear head, not {a.head!r}")
            model = ArticleViT(a.image_size, a.patch_size, a.in_channels, a.out_channels, a.embed_size,
                               a.num_blocks, a.num_heads, a.dropout)
            return NotebookContender(model, "article notebook (fp32, MHA + Unfold/Fold, PIL DataLoader)", size,
                                     batch, device, pairs, settings.workers)

        makers.append(notebook_vit)
    elif model_name.startswith("segformer"):
        if options:
            raise ValueError("model_options are not mirrored into HF's config; leave them out for segformer-*")
        makers.append(lambda: HFContender(model_name, size, batch, device, settings.peer_amp, data))
    else:
        makers.append(lambda: NotebookContender(build_model(model_name, num_classes=3, image_size=size, **options),
                                                "same CNN, notebook data path (fp32, PIL DataLoader, Adam)", size,
                                                batch, device, pairs, settings.workers))
    return makers


def measure_case(model_name: str, size: int, settings: Settings, device: torch.device,
                 pairs: list[tuple[Path, Path]], matmul: dict[str, float], log: Callable[[str], None]) -> dict:
    batch = max(1, round(settings.batch * (128 / size) ** 2)) if size > 128 else settings.batch
    infer_batch = max(1, round(settings.infer_batch * (128 / size) ** 2)) if size > 128 else settings.infer_batch
    data = decode_once(pairs, size)
    contenders = []
    mem: dict[str, float] = {}
    compile_s: dict[str, float] = {}
    for make in build_contenders(model_name, size, batch, settings, device, pairs, data):
        gc.collect()
        with common.PeakMemory(device) as peak:
            c = make()
            t0 = time.perf_counter()
            c.step()
            c.finish()
            first = time.perf_counter() - t0
            for _ in range(settings.warmup - 1):
                c.step()
            c.finish()
        mem[c.name] = peak.mib
        if "compiled" in c.name:
            compile_s[c.name] = first
        contenders.append(c)
        log(f"  built {c.name}: first step {first:.2f}s")
    x_flops = torch.rand(batch, 3, size, size, device=device)
    y_flops = torch.randint(0, 3, (batch, size, size), device=device)
    flops: dict[str, int] = {}
    for c in contenders:  # each model's own count (seglab's SegFormer decoder does less work than HF's)
        flops[c.name] = c.flops_step(x_flops, y_flops) if "compiled" not in c.name else flops[contenders[0].name]
        c.optimizer.zero_grad(set_to_none=True)

    train = common.interleaved({c.name: train_rate(c, settings.steps) for c in contenders}, settings.rounds)
    log("  train img/s: " + ", ".join(f"{k} {np.median(v):.2f}" for k, v in train.items()))
    for c in contenders:
        c.model.eval()
    x1 = torch.rand(1, 3, size, size, device=device)
    xb = torch.rand(infer_batch, 3, size, size, device=device)
    for c in contenders:  # warm-up (and compilation) of both shapes
        c.infer(x1)
        c.infer(xb)
    infer1 = common.interleaved({c.name: _infer_rate(c, x1, settings.infer_reps * 2) for c in contenders},
                                settings.rounds)
    inferb = common.interleaved({c.name: _infer_rate(c, xb, settings.infer_reps) for c in contenders},
                                settings.rounds)
    log("  infer b1 img/s: " + ", ".join(f"{k} {np.median(v):.1f}" for k, v in infer1.items()))

    peer = next(c for c in contenders if c.role == "peer")
    rows = []
    for c in contenders:
        tr, i1, ib = common.summary(train[c.name]), common.summary(infer1[c.name]), common.summary(inferb[c.name])
        dtype = "bf16" if "bf16" in c.name else "fp32"
        achieved = flops[c.name] / batch * tr["median"]
        row = {
            "name": c.name,
            "role": c.role,
            "train_images_per_s": tr,
            "infer_b1_images_per_s": i1,
            "latency_b1_ms": 1000.0 / i1["median"],
            "infer_batch_images_per_s": ib,
            "peak_memory_mib": mem[c.name],
            "train_flops_per_image": flops[c.name] / batch,
            "train_tflops_per_s": achieved / 1e12,
            "mfu": achieved / matmul[dtype] if dtype in matmul else None,
        }
        if c.name in compile_s:
            row["compile_and_first_step_s"] = compile_s[c.name]
        rows.append(row)
    peer_row = next(r for r in rows if r["name"] == peer.name)
    for row in rows:
        row["train_ratio"] = row["train_images_per_s"]["median"] / peer_row["train_images_per_s"]["median"]
        row["infer_b1_ratio"] = row["infer_b1_images_per_s"]["median"] / peer_row["infer_b1_images_per_s"]["median"]
        row["infer_batch_ratio"] = (row["infer_batch_images_per_s"]["median"]
                                    / peer_row["infer_batch_images_per_s"]["median"])
    del contenders, peer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"model": model_name, "size": size, "batch": batch, "infer_batch": infer_batch,
            "peer": peer_row["name"], "contenders": rows}


TARGETS = {"vit": 1.3, "segformer-b0": 1.2}  # seglab's training images/s over the peer's, same run


def check_targets(cases: list[dict]) -> list[dict]:
    out = []
    for case in cases:
        target = TARGETS.get(case["model"])
        if target is None or case["size"] != 128:
            continue
        seglab = [r for r in case["contenders"] if r["role"] == "seglab"]
        best = max(seglab, key=lambda r: r["train_ratio"])
        same = [r for r in seglab if ("bf16" in r["name"]) == ("bf16" in case["peer"]) and "compiled" not in r["name"]]
        entry = {"model": case["model"], "size": case["size"], "target": target, "peer": case["peer"],
                 "best": best["name"], "best_ratio": best["train_ratio"], "met": best["train_ratio"] >= target}
        if same:
            entry["same_precision"] = same[0]["name"]
            entry["same_precision_ratio"] = same[0]["train_ratio"]
        out.append(entry)
    return out


def to_markdown(result: dict) -> str:
    env = result["environment"]
    lines = [f"Throughput on {env['device_name']}: torch {env['torch']}"
             + (f", transformers {env['transformers']}" if "transformers" in env else "")
             + f", commit {env['git_commit'][:12]}, {env['date']}.", "",
             f"Command: `{result['command']}`", ""]
    headers = ["model", "size", "batch", "contender", "train img/s", "x peer", "infer b1 img/s", "latency b1 ms",
               "infer img/s (batch)", "x peer", "peak MiB", "train GFLOP/img", "MFU"]
    rows = []
    for case in result["cases"]:
        for r in case["contenders"]:
            peer = r["role"] == "peer"
            rows.append([case["model"], case["size"], case["batch"], r["name"],
                         r["train_images_per_s"]["median"], "1 (peer)" if peer else f"{r['train_ratio']:.2f}x",
                         r["infer_b1_images_per_s"]["median"], r["latency_b1_ms"],
                         f"{r['infer_batch_images_per_s']['median']:.3g} ({case['infer_batch']})",
                         "1 (peer)" if peer else f"{r['infer_batch_ratio']:.2f}x", r["peak_memory_mib"],
                         r["train_flops_per_image"] / 1e9, "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"])
    lines.append(common.markdown_table(headers, rows))
    if result["targets"]:
        lines += ["", "Targets (training images/s, seglab / peer, same run):", ""]
        for t in result["targets"]:
            same = (f"; same precision ({t['same_precision']}): {t['same_precision_ratio']:.2f}x"
                    if "same_precision" in t else "")
            lines.append(f"- {t['model']} at {t['size']}: target {t['target']}x, best {t['best']} "
                         f"{t['best_ratio']:.2f}x -> {'met' if t['met'] else 'missed'}{same}")
    rates = ", ".join(f"{k} {v / 1e12:.3g} TFLOP/s" for k, v in result["matmul_flops_per_s"].items())
    lines += ["", "Medians of interleaved rounds; every round is in the JSON. Peak memory on CPU is the growth "
              "of the resident set (approximate). MFU: counted training FLOPs per second over a dense matmul "
              f"rate measured here ({rates})."]
    return "\n".join(lines)


def run(settings: Settings, out_dir: str | Path | None = common.RESULTS, tag: str = "",
        log: Callable[[str], None] = print, command: str = "") -> dict:
    """Measure every (model, size) of `settings`; write JSON + markdown under out_dir (unless None)."""
    device = common.resolve_device(settings.device)
    env = common.environment(device)
    log(f"device: {env['device_name']}; torch {env['torch']}")
    seconds, n = (0.5 if settings.quick else 1.0), settings.matmul_size
    matmul = {"fp32": common.matmul_rate(device, torch.float32, n, seconds)}
    if any(_amp_label(a, device) == "bf16" for a in settings.amps + [settings.peer_amp]):
        matmul["bf16"] = common.matmul_rate(device, torch.bfloat16, n, seconds)
    log("matmul: " + ", ".join(f"{k} {v / 1e12:.3g} TFLOP/s" for k, v in matmul.items()))
    cases = []
    with tempfile.TemporaryDirectory(prefix="seglab-bench-") as tmp:
        pairs = load_pairs(settings, Path(tmp))
        for model_name in settings.models:
            for size in settings.sizes:
                if f"{model_name}@{size}" in settings.skip:
                    log(f"{model_name} @ {size}: skipped on {device.type} (see --help)")
                    continue
                log(f"{model_name} @ {size}x{size}")
                cases.append(measure_case(model_name, size, settings, device, pairs, matmul, log))
    result = {
        "benchmark": "throughput",
        "command": command,
        "environment": env,
        "settings": {k: v for k, v in vars(settings).items()},
        "matmul_flops_per_s": matmul,
        "cases": cases,
        "targets": check_targets(cases) if device.type == "cpu" else [],
        "load_average_at_end": common.load_average(),
    }
    markdown = to_markdown(result)
    log("\n" + markdown)
    if out_dir is not None:
        stem = f"throughput-{device.type}" + ("-quick" if settings.quick else "") + (f"-{tag}" if tag else "")
        paths = common.save_results(result, markdown, out_dir, stem)
        log(f"wrote {paths[0]} and {paths[1]}")
    return result


def settings_from_args(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few steps, 128x128 only, small batches (CPU: minutes)")
    p.add_argument("--models", default=None, help="comma-separated registry names (default: " + ",".join(ALL_MODELS)
                   + "; --quick on a CPU leaves out vit-p8, 4x the ViT's tokens: minutes per round there)")
    p.add_argument("--sizes", default=None, help="comma-separated image sizes (default: 128,512; CPU: 128, plus "
                   "512 for segformer-b0 and segnet; --quick: 128)")
    p.add_argument("--batch", type=int, default=None, help="training batch at 128 (default 8; quick 4; CUDA 64)")
    p.add_argument("--infer-batch", type=int, default=None, help="the large inference batch at 128 (default 16; "
                   "quick 4; CUDA 256)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per round (default 3; quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2; quick 1; CUDA 5)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; quick 2)")
    p.add_argument("--amp", default=None, help="seglab's precisions, comma-separated from auto,bf16,off "
                   "(default: auto on CUDA; on CPU off, plus bf16 when the CPU has native bf16)")
    p.add_argument("--peer-amp", default="auto", help="HF's precision (auto: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--compile", action="store_true", help="add a torch.compile'd seglab row")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of the notebook path (default 0)")
    p.add_argument("--data-root", default=None, help="Oxford-IIIT Pet folder (images/, annotations/trimaps/) "
                   "for the JPEGs; default: synthetic pets written to a temporary folder")
    p.add_argument("--samples", type=int, default=64, help="how many images the data holds")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    p.add_argument("--out", default=str(common.RESULTS))
    p.add_argument("--tag", default="", help="suffix of the results' file names")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = common.resolve_device(a.device)
    cuda = device.type == "cuda"
    if a.models:
        models = [m for m in a.models.split(",") if m]
    else:
        models = [m for m in ALL_MODELS if not (a.quick and not cuda and m == "vit-p8")]
    if a.sizes:
        sizes = [int(s) for s in a.sizes.split(",")]
    else:
        sizes = [128] if a.quick else [128, 512]
    skip: list[str] = []
    if not cuda and not a.sizes:  # 512 on 2 CPU cores: minutes per step for the ViTs and B2
        skip = [f"{m}@512" for m in models if m not in ("segformer-b0", "segnet")]
    if a.amp:
        amps = a.amp.split(",")
    elif cuda:
        amps = ["auto"]
    else:
        amps = ["off", "bf16"] if common.cpu_bf16_native() else ["off"]
    s = Settings(
        models=models, sizes=sizes,
        batch=a.batch or (64 if cuda else 4 if a.quick else 8),
        infer_batch=a.infer_batch or (256 if cuda else 4 if a.quick else 16),
        steps=a.steps or (20 if cuda else 2 if a.quick else 3),
        warmup=a.warmup or (5 if cuda else 1 if a.quick else 2),
        rounds=a.rounds or (2 if a.quick else 3),
        infer_reps=10 if cuda else 2 if a.quick else 3,
        amps=amps, peer_amp=a.peer_amp, compile=a.compile, workers=a.workers, data_root=a.data_root,
        samples=a.samples, device=a.device, quick=a.quick, skip=skip,
    )
    return s, a


def main(argv: list[str] | None = None) -> None:
    settings, a = settings_from_args(argv)
    command = "python benchmarks/throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    run(settings, a.out, a.tag, command=command.strip())
    print(f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
