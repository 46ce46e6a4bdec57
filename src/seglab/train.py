"""train(): the training loop. Data cached as uint8 on the device and augmented there, bf16 autocast on CUDA,
optional torch.compile, DDP under torchrun, atomic checkpoints every epoch, exact resume.

`train()` reads as its phases: resolve the config -> build (device, data, model, optimizer, scheduler, loss) ->
restore (or start) the run directory -> for each epoch: one epoch of steps, end of epoch (evaluate, log,
checkpoint) -> finish. Where each concept lives:
  the loss                  make_loss
  parameter groups          _param_groups (what trains, and at which learning rate)
  optimizer / scheduler     make_optimizer / _make_scheduler
  one optimizer step        train_step (gradient clipping goes between its backward() and step())
  per-step additions        _one_epoch, after train_step (e.g. an EMA of the weights)
  what a checkpoint holds   _end_of_epoch
Elsewhere: the device (device.py), evaluation (evaluate.py), the run directory's files (run.py), --init-from
(finetune.py).

Determinism: every epoch reseeds its own random streams from (seed, epoch) — the shuffle, the augmentation and
dropout — so a run resumed at an epoch boundary replays exactly what an uninterrupted run does (on CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from . import distributed as dist
from .checkpoint import load_weights, model_state, read_checkpoint, restore_optimizer, save_checkpoint, train_state
from .config import TrainConfig
from .data import ImageStore, SegmentationDataset
from .data.augment import AugmentConfig, augment_batch, to_float
from .data.cache import resize_pair
from .data.checks import check_splits
from .data.crops import CropConfig, crop_batch, largest_crop_fits
from .device import autocast_for, resolve_device
from .errors import SeglabError
from .evaluate import evaluate, load_split, torch_forward, write_confusion
from .finetune import load_init_from, param_groups, set_encoder_frozen
from .inference import InferenceConfig, segment
from .losses import LossFn, build_loss
from .metrics import IGNORE_INDEX, per_class_line
from .models import build_model
from .run import RunDir, numeric, start_line
from .tracking import Tracker, make_trackers
from .viz import grid_image, save_curves, save_gif


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, float]  # the last epoch's row of metrics.csv
    history: list[dict[str, float]] = field(default_factory=list)
    model: nn.Module | None = None  # the trained model (unwrapped from DDP / compile)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1)


Split = SegmentationDataset | ImageStore


def load_datasets(cfg: TrainConfig) -> tuple[Split, Split]:
    """The training and validation splits of cfg.dataset: IMAGE_SIZE squares (the article protocol), or at their
    own size (the original protocol: training images capped at cache_max_side, validation masks as labelled)."""
    cfg = cfg.with_default_splits()
    original = cfg.protocol == "original"

    def both() -> tuple[Split, Split]:
        return (load_split(cfg, cfg.train_split, cfg.train_samples, original=original,
                           max_side=cfg.cache_max_side or None),
                load_split(cfg, cfg.val_split, cfg.val_samples, original=original))

    if dist.is_main():  # rank 0 builds the caches; the others then read them
        train_ds, val_ds = both()
        dist.barrier()
    else:
        dist.barrier()
        train_ds, val_ds = both()
    if train_ds.class_names != val_ds.class_names:
        raise SeglabError(f"train and val splits disagree on classes: {train_ds.class_names} vs {val_ds.class_names}")
    return train_ds, val_ds


def make_loss(cfg: TrainConfig, train_ds: Split) -> LossFn:
    """The training loss (cfg.loss: cross-entropy by default, the article's), ignoring 255, with cfg.class_weights
    (auto: from the training split's pixels per class) and cfg.label_smoothing (cross-entropy)."""
    return build_loss(cfg.loss, cfg.class_weights, ignore_index=IGNORE_INDEX, pixel_counts=train_ds.pixel_counts(),
                      label_smoothing=cfg.label_smoothing)


def _preflight(train_ds: Split, val_ds: Split, cfg: TrainConfig) -> list[str]:
    """Refuse data a run cannot mean anything on (data/checks.py), before the first step; return the warnings."""
    errors, warnings = check_splits(train_ds, val_ds, where=cfg.data_root or cfg.dataset)
    if errors:
        more = f" (and {len(errors) - 1} more problem(s): seglab data inspect lists them)" if len(errors) > 1 else ""
        raise SeglabError(errors[0] + more)
    if isinstance(train_ds, ImageStore) and not largest_crop_fits(train_ds, _crop_config(cfg)):
        h, w = cfg.crop()
        longest = int(train_ds.sizes.max())
        raise SeglabError(f"--crop-size {h} {w} is larger than every training image even at the largest scale "
                          f"{cfg.scale_range[1]:g} (the longest side is {longest} px, base size "
                          f"{cfg.base_size or 'their own'}): every crop would be mostly padding. Choose a smaller "
                          "--crop-size, or a larger --base-size or --scale-range.")
    return warnings


def _crop_config(cfg: TrainConfig) -> CropConfig:
    return CropConfig(crop_size=cfg.crop(), base_size=cfg.base_size,
                      scale_range=(cfg.scale_range[0], cfg.scale_range[1]), cat_max_ratio=cfg.cat_max_ratio)


def _inference_config(cfg: TrainConfig) -> InferenceConfig:
    """How validation runs the model under the original protocol."""
    return InferenceConfig(mode=cfg.eval_mode, overlap=cfg.overlap, batch_size=cfg.eval_batch_size)


def _param_groups(cfg: TrainConfig, model: nn.Module) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: which parameters train (requires_grad), and with which options.

    With encoder_lr_ratio != 1 (the finetune recipe) the encoder's parameters learn at lr * ratio, the new ones at
    lr, and norms and biases get no weight decay (finetune.param_groups). Parameters frozen for the first epochs
    are in the groups too: they get no gradient while frozen, so the optimizer leaves them alone.
    """
    if cfg.encoder_lr_ratio != 1.0:
        return param_groups(model, cfg.lr, cfg.encoder_lr_ratio, cfg.weight_decay)
    return [{"params": [p for p in model.parameters() if p.requires_grad]}]


def make_optimizer(cfg: TrainConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    groups = _param_groups(cfg, model)
    # Fused Adam/AdamW: one kernel for all parameters, on CPU too (torch >= 2.4): 1.07x the training images/s of
    # the for-loop Adam on the 86M-parameter ViT (benchmarks/results/speedups-cpu-1thread.md, fused-optimizer).
    fused = {"fused": True} if device.type in ("cuda", "cpu") else {}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def prepare_model(model: nn.Module, device: torch.device) -> bool:
    """On CUDA, put a convolutional network (the SegNets) in channels_last memory format, the layout cuDNN's tensor
    cores prefer; transformers stay as they are. Not on CPU: there it measured 1.00x for segnet
    (benchmarks/results/speedups-cpu-1thread.md) and 0.5x for segnet-dsc-head's depthwise convolutions (5.5 vs 2.8
    training img/s at batch 16, 128x128). Returns True when the inputs should be made channels_last too."""
    from .models.cnn import SegNet

    if isinstance(model, SegNet) and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        return True
    return False


def _make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> tuple[Any, bool]:
    """(scheduler, stepped per optimizer step?). StepLR steps once per epoch, as in the article."""
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma), False
    if cfg.scheduler == "none":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0), False
    total = cfg.epochs * steps_per_epoch
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.scheduler == "onecycle":
        max_lr = [g.get("lr", cfg.lr) for g in optimizer.param_groups]  # keeps the encoder's ratio
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total,
                                                   pct_start=max(warm / total, 0.05)), True
    power = 1.0 if cfg.scheduler == "poly" else None

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return (1.0 - t) ** power if power else 0.5 * (1.0 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), True


def _new_run_dir(cfg: TrainConfig) -> RunDir:
    name = cfg.run_name or f"{cfg.model}-{cfg.dataset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    path = Path(cfg.out_dir) / name
    if dist.is_distributed():  # every rank must use rank 0's name
        box = [str(path)]
        torch.distributed.broadcast_object_list(box, src=0)
        path = Path(box[0])
    run_dir = RunDir(path)
    if dist.is_main():
        if run_dir.checkpoint("last").exists():
            raise SeglabError(f"run directory {path} already holds a run; resume it with --resume {path} "
                              "or choose another --run-name")
        run_dir.make_folders()
    dist.barrier()
    return run_dir


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    masks: torch.Tensor,
    loss_fn: LossFn,
    device: torch.device,
    amp: str = "auto",
    channels_last: bool = False,
) -> torch.Tensor:
    """One optimizer step on a batch: images (B, 3, H, W) float, masks (B, H, W) int64 -> the loss (detached).

    The forward pass runs under autocast_for(device, amp); the loss is computed in float32. benchmarks/ time this
    function itself; optimizer_step is the same with gradient accumulation and clipping.
    """
    return optimizer_step(model, optimizer, [(images, masks)], loss_fn, device, amp, channels_last)


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
    device: torch.device,
    amp: str = "auto",
    channels_last: bool = False,
    clip_grad_norm: float = 0.0,
) -> torch.Tensor:
    """One optimizer step over micro-batches [(images (b, 3, H, W), masks (b, H, W)), ...] -> the step's loss.

    Each micro-batch's loss is weighted by its share of the step's images, so N micro-batches of B images step as
    one batch of N x B does (exactly so for a per-image mean loss; cross-entropy's per-pixel mean matches when the
    images have the same number of labelled pixels). Under DDP the gradients are all-reduced on the last
    micro-batch only. clip_grad_norm > 0 clips the gradients' global L2 norm between backward() and step().
    """
    total = sum(len(x) for x, _ in micro_batches)
    ddp = getattr(model, "_orig_mod", model)  # torch.compile wraps the DDP module
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=device)
    for i, (images, masks) in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        sync = contextlib.nullcontext() if last or not isinstance(ddp, nn.parallel.DistributedDataParallel) \
            else ddp.no_sync()
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with sync:
            with autocast_for(device, amp):
                logits = model(images)  # (b, C, H, W)
            loss = loss_fn(logits.float(), masks) * (len(images) / total)
            loss.backward()
        loss_sum += loss.detach()
    if clip_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip_grad_norm)
    optimizer.step()
    return loss_sum


def make_ema(cfg: TrainConfig, model: nn.Module) -> AveragedModel | None:
    """An exponential moving average of the model's weights and buffers (BatchNorm statistics too), or None."""
    if cfg.ema <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)


def score_of(row: dict[str, Any], metric: str) -> float:
    """The value of cfg.best_metric in a metrics row, signed so that higher is better."""
    return -float(row["val_loss"]) if metric == "val_loss" else float(row[metric])


@dataclass
class _Run:
    """What the phases of train() share: the config, the device, the data, the model and its optimizer."""

    cfg: TrainConfig
    device: torch.device
    train_ds: Split
    val_ds: Split
    raw_model: nn.Module  # the model itself (its state is what checkpoints hold)
    model: nn.Module  # what the steps call: raw_model, or its DDP / torch.compile wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
    per_step: bool  # the scheduler steps after every optimizer step (else once per epoch)
    loss_fn: LossFn
    channels_last: bool
    per_rank_batch: int
    per_rank_samples: int
    steps_per_epoch: int
    images: torch.Tensor | None  # (N, 3, H, W) uint8: the whole training split on the device (article protocol)
    masks: torch.Tensor | None  # (N, H, W) uint8
    vis_x: torch.Tensor  # (V, 3, S, S) float: the fixed validation images drawn each epoch
    vis_y: torch.Tensor  # (V, S, S) int64, on the CPU
    vis_images: list[np.ndarray] = field(default_factory=list)  # original protocol: those images (h, w, 3) uint8
    warnings: list[str] = field(default_factory=list)  # from the pre-flight checks, logged once
    run_dir: RunDir = RunDir(Path())
    ema: AveragedModel | None = None  # the moving average of the weights, with --ema
    start_epoch: int = 0
    best: float = -math.inf  # the best score_of(best_metric) so far
    stale: int = 0  # evaluations since the best one (early stopping)
    stopped: bool = False
    trackers: list[Tracker] = field(default_factory=list)  # --log: TensorBoard, MLflow (rank 0)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def world(self) -> int:
        return dist.world_size()

    @property
    def evaluated(self) -> nn.Module:
        """What is evaluated, drawn and saved as the model: the moving average with --ema, else the model."""
        if self.ema is not None:
            return self.ema.module
        return self.raw_model if not self.cfg.compile else self.model

    @property
    def quiet(self) -> bool:
        return self.cfg.quiet or not dist.is_main()

    def log(self, msg: str) -> None:
        """A line in train.log (rank 0), and on the terminal unless quiet."""
        if dist.is_main():
            self.run_dir.log(msg)
            if not self.cfg.quiet:
                tqdm.write(msg)


def train(config: TrainConfig | None = None, resume: str | Path | None = None) -> TrainResult:
    """Train a model as `config` says, or continue the run in directory `resume` exactly where it stopped.

    Writes RUN_DIR/config.yaml, metrics.csv (a row per epoch), checkpoints/{last,best}.safetensors,
    figures/epoch_NNN.png, figures/progress.gif, figures/curves.png and train.log.
    """
    cfg = resolve_config(config, resume)
    run = _build(cfg, resuming=resume is not None)
    _restore(run, resume)
    for epoch in range(run.start_epoch, cfg.epochs):
        stats = _one_epoch(run, epoch)
        _end_of_epoch(run, epoch, stats)
        if run.stopped:
            break
    return _finish(run)


RESUME_CHANGES = ("epochs", "quiet")  # what a resumed run may change from its config.yaml


def resolve_config(config: TrainConfig | None = None, resume: str | Path | None = None) -> TrainConfig:
    """The validated config of a run: `config` (default: the article's recipe), or when resuming, the run's own
    config.yaml with only RESUME_CHANGES (e.g. more epochs) taken from `config`."""
    if resume is not None:
        resume = Path(resume)
        if not (resume / "config.yaml").exists():
            raise SeglabError(f"--resume {resume}: not a run directory (no config.yaml there)")
        cfg = TrainConfig.from_yaml(resume / "config.yaml")
        if config is not None:
            cfg = dataclasses.replace(cfg, **{k: getattr(config, k) for k in RESUME_CHANGES})
    else:
        cfg = config if config is not None else TrainConfig()
    cfg.validate()
    return cfg.with_default_splits()


def _build(cfg: TrainConfig, resuming: bool) -> _Run:
    """Device (and the process group under torchrun), data, model, optimizer, scheduler and loss."""
    device = resolve_device(cfg.device)
    rank_device = dist.init(device.type)
    if rank_device is not None:
        device = rank_device
    world = dist.world_size()
    if cfg.batch_size % world:
        raise SeglabError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes of this run")
    torch.manual_seed(cfg.seed)

    train_ds, val_ds = load_datasets(cfg)
    warnings = _preflight(train_ds, val_ds, cfg)
    if cfg.dataset == "folder" and train_ds.mask_format is not None:
        cfg = dataclasses.replace(cfg, masks=train_ds.mask_format.to_dict())  # config.yaml records how masks read
    options = dict(cfg.model_options)
    if cfg.encoder_weights is not None and not resuming:  # a resumed run's weights come from its own checkpoint
        options["encoder_weights"] = cfg.encoder_weights
    raw_model = build_model(cfg.model, num_classes=train_ds.num_classes, image_size=cfg.image_size, **options)
    if cfg.init_from and not resuming:  # a resumed run's weights come from its own checkpoint
        load_init_from(raw_model, cfg.init_from)
    raw_model.to(device)
    channels_last = prepare_model(raw_model, device)
    model = raw_model
    if dist.is_distributed():
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                    find_unused_parameters=cfg.freeze_encoder_epochs > 0)
    if cfg.compile:
        model = torch.compile(model)

    per_rank_batch = cfg.batch_size // world
    per_rank_samples = math.ceil(len(train_ds) / world)
    steps_per_epoch = math.ceil(per_rank_samples / (per_rank_batch * cfg.accumulate))
    optimizer = make_optimizer(cfg, raw_model, device)
    scheduler, per_step = _make_scheduler(cfg, optimizer, steps_per_epoch)
    n_vis = min(cfg.num_vis, len(val_ds))
    common = dict(cfg=cfg, device=device, train_ds=train_ds, val_ds=val_ds, raw_model=raw_model, model=model,
                  optimizer=optimizer, scheduler=scheduler, per_step=per_step, loss_fn=make_loss(cfg, train_ds),
                  warnings=warnings, channels_last=channels_last, per_rank_batch=per_rank_batch,
                  per_rank_samples=per_rank_samples, steps_per_epoch=steps_per_epoch, ema=make_ema(cfg, raw_model))
    if isinstance(train_ds, ImageStore):  # crops are cut per batch; the figure shows squares of the first images
        vis_images = [np.ascontiguousarray(val_ds.image(i).transpose(1, 2, 0)) for i in range(n_vis)]
        vis_x, vis_y = _squares(vis_images, [val_ds.mask(i) for i in range(n_vis)], cfg.image_size)
        return _Run(**common, images=None, masks=None, vis_x=vis_x, vis_y=vis_y, vis_images=vis_images)
    return _Run(**common, images=train_ds.images.to(device), masks=train_ds.masks.to(device),
                vis_x=to_float(val_ds.images[:n_vis].to(device)), vis_y=val_ds.masks[:n_vis].long())


def _squares(images: list[np.ndarray], masks: list[np.ndarray], side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (h, w, 3) uint8 and masks (h, w) of any sizes -> float (V, 3, S, S) and int64 (V, S, S), for a grid."""
    from PIL import Image

    pairs = [resize_pair(Image.fromarray(im), m, (side, side), "bilinear") for im, m in zip(images, masks)]
    x = [torch.from_numpy(np.array(im)).permute(2, 0, 1) for im, _ in pairs]
    y = [torch.from_numpy(np.array(m)) for _, m in pairs]
    if not x:
        return torch.zeros(0, 3, side, side), torch.zeros(0, side, side, dtype=torch.long)
    return to_float(torch.stack(x)), torch.stack(y).long()


def _restore(run: _Run, resume: str | Path | None) -> None:
    """A new run directory, or the resumed run's: its last checkpoint's weights, optimizer, scheduler, epoch."""
    cfg = run.cfg
    if resume is not None:
        run.run_dir = RunDir(Path(resume))
        last = run.run_dir.checkpoint("last")
        if last.exists():
            tensors, header = read_checkpoint(last)
            saved = train_state(tensors)
            if run.ema is not None:  # the checkpoint's model is the average; the live weights are kept beside it
                run.ema.module.load_state_dict(model_state(tensors))
                run.ema.n_averaged.copy_(saved.pop("n_averaged"))
                load_weights(run.raw_model, saved, last)
            else:
                load_weights(run.raw_model, tensors, last)
            restore_optimizer(run.optimizer, tensors, header, last)
            run.scheduler.load_state_dict(header["scheduler"])
            run.start_epoch = int(header["epoch"])
            run.best = float(header.get("best", -math.inf))
            run.stale = int(header.get("stale", 0))
        # else: stopped before its first checkpoint: start again from epoch 0 in the same directory
        run.run_dir.make_folders()
        if dist.is_main():
            rows = [r for r in run.run_dir.read_metrics() if int(r["epoch"]) <= run.start_epoch]
            run.run_dir.write_metrics(rows)  # drop rows of an epoch that was not checkpointed
        if not run.quiet:
            print(f"resuming {run.run_dir.path} after epoch {run.start_epoch}/{cfg.epochs}")
    else:
        run.run_dir = _new_run_dir(cfg)
        if dist.is_main():
            cfg.to_yaml(run.run_dir.config_path)
    run.history = run.run_dir.read_metrics() if dist.is_main() else []
    if dist.is_main():
        run.trackers = make_trackers(cfg.log, run.run_dir.path, dataclasses.asdict(cfg), cfg.mlflow_uri)

    train_ds, val_ds = run.train_ds, run.val_ds
    if train_ds.skipped or val_ds.skipped:  # reported in train.log too, so a --quiet run keeps the record
        for ds in (train_ds, val_ds):
            for sid, why in ds.skipped:
                run.log(f"skipped ({ds.split}): {sid}: {why}")
        run.log(f"--skip-bad: left out {len(train_ds.skipped)} training and {len(val_ds.skipped)} validation "
                "file(s)")
    # How the masks were read, and the pre-flight warnings: on the terminal even with --quiet (one line each).
    for line in [f"masks: {train_ds.describe_masks()}", *(f"warning: {w}" for w in run.warnings)]:
        run.log(line)
        if cfg.quiet and dist.is_main():
            print(line)
    if run.start_epoch == 0:
        n_params = sum(p.numel() for p in run.raw_model.parameters())
        if cfg.protocol == "original":
            h, w = cfg.crop()
            cap = f", long side <= {cfg.cache_max_side}" if cfg.cache_max_side else ""
            size = (f"their own size{cap} (original protocol: {h}x{w} crops, scale {cfg.scale_range[0]:g}-"
                    f"{cfg.scale_range[1]:g} of {f'long side {cfg.base_size}' if cfg.base_size else 'their own'}; "
                    f"scored at the masks' size, {cfg.eval_mode})")
        else:
            size = f"{cfg.image_size}x{cfg.image_size} (article protocol)"
        run.log(start_line(cfg.model, n_params, cfg.dataset, len(train_ds), len(val_ds), size, str(run.device),
                           run.world))


def _one_epoch(run: _Run, epoch: int) -> dict[str, float]:
    """Shuffle, augment and step through this rank's shard of the training split; stop on a non-finite loss."""
    cfg, device, world = run.cfg, run.device, run.world
    images, masks = run.images, run.masks
    aug = AugmentConfig(hflip=cfg.hflip, contrast=cfg.contrast, brightness=cfg.brightness, saturation=cfg.saturation,
                        hue=cfg.hue, vflip=cfg.vflip, rot90=cfg.rot90, blur=cfg.blur)
    crops = _crop_config(cfg) if images is None else None
    n_train = len(run.train_ds)
    t0 = time.perf_counter()
    seed = _epoch_seed(cfg.seed, epoch)
    torch.manual_seed(seed)  # dropout and drop-path of this epoch
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    if world > 1:  # pad to a multiple of the world size like DistributedSampler, then take this rank's shard
        order = torch.cat([order, order[: run.per_rank_samples * world - n_train]])[dist.rank()::world]
    if crops is None:
        order = order.to(device)  # once per epoch: no host-to-device copy inside the step
    aug_gen = torch.Generator(device=device).manual_seed(seed + dist.rank())
    crop_gen = torch.Generator().manual_seed(seed + 7 * dist.rank() + 1)  # CPU: the same crops on every device
    run.model.train()
    if cfg.freeze_encoder_epochs:  # after train(), which would put the frozen BatchNorms back into training mode
        set_encoder_frozen(run.raw_model, epoch < cfg.freeze_encoder_epochs)
    loss_sum = torch.zeros((), device=device)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    steps, batch = run.steps_per_epoch, run.per_rank_batch
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=run.quiet, leave=False)
    for step in bar:
        micro = []
        for m in range(cfg.accumulate):  # --accumulate N: N micro-batches of BATCH_SIZE per optimizer step
            first = (step * cfg.accumulate + m) * batch
            b = order[first:first + batch]
            if not len(b):
                break
            if crops is None:
                micro.append(augment_batch(images[b], masks[b], aug, aug_gen))  # (B, 3, H, W), (B, H, W)
            else:
                x, y = crop_batch(run.train_ds, b.tolist(), crops, crop_gen, device)  # (B, 3, h, w), (B, h, w)
                micro.append(augment_batch(x, y, aug, aug_gen))
        loss = optimizer_step(run.model, run.optimizer, micro, run.loss_fn, device, cfg.amp, run.channels_last,
                              cfg.clip_grad_norm)
        if run.ema is not None:
            run.ema.update_parameters(run.raw_model)
        if run.per_step:
            run.scheduler.step()
        loss_sum += loss
        # Remember the first non-finite step on the device (no host sync); checked every few steps.
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
        if step % 20 == 19 or step == steps - 1:
            if first_bad.item() >= 0:
                last_ckpt = run.run_dir.checkpoint("last")
                kept = (f"The last good checkpoint is {last_ckpt}" if epoch > 0 and last_ckpt.exists()
                        else "No epoch had finished, so no checkpoint was written")
                raise SeglabError(
                    f"loss became non-finite at epoch {epoch + 1}, step {first_bad.item() + 1}; training stopped. "
                    f"{kept} (try a lower --lr)")
            bar.set_postfix(loss=f"{loss_sum.item() / (step + 1):.4f}")
    lr = run.optimizer.param_groups[0]["lr"]
    if not run.per_step:
        run.scheduler.step()
    train_loss = dist.all_reduce_sum(loss_sum.clone()).item() / (steps * world)
    return {"train_loss": train_loss, "lr": lr, "t0": t0, "train_seconds": time.perf_counter() - t0}


def _end_of_epoch(run: _Run, epoch: int, stats: dict[str, float]) -> None:
    """Evaluate (every eval_every epochs and the last), then (rank 0) append the metrics row, draw the figure and
    write the checkpoints; log a line; stop the run when best_metric has not improved for early_stop evaluations."""
    cfg, raw_model, train_ds, val_ds = run.cfg, run.raw_model, run.train_ds, run.val_ds
    seconds = time.perf_counter() - stats["t0"]
    row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": stats["train_loss"]}
    due = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
    model = run.evaluated
    improved = False
    if due:
        dist.broadcast_buffers(raw_model)  # every rank evaluates with rank 0's BatchNorm statistics
        custom = run.loss_fn if (cfg.loss != "ce" or cfg.class_weights != "none") else None
        val = evaluate(model, val_ds, cfg.eval_batch_size, run.device, cfg.amp, run.quiet, loss_fn=custom,
                       geometry=cfg.geometry(), inference=_inference_config(cfg))
        row.update({"val_loss": val.pop("loss"), **val})
        seconds = time.perf_counter() - stats["t0"]
        score = score_of(row, cfg.best_metric)
        improved = score > run.best
        run.best, run.stale = (score, 0) if improved else (run.best, run.stale + 1)
    row.update({"lr": stats["lr"], "seconds": seconds, "images_per_s": len(train_ds) / stats["train_seconds"],
                "protocol": val.protocol if due else ""})
    if dist.is_main():
        run.history.append({k: _fmt(v) for k, v in row.items()})
        run.run_dir.write_metrics(run.history)
        if due and len(run.vis_x):  # --num-vis 0 draws no grid (and so no progress GIF)
            with torch.inference_mode():
                model.eval()
                if run.vis_images:  # predicted at their own size as validation does, shown as squares
                    masks = segment(run.vis_images, torch_forward(model, run.device, cfg.amp), cfg.geometry(),
                                    _inference_config(cfg))
                    pred = _squares(run.vis_images, masks, cfg.image_size)[1]
                else:
                    pred = model(run.vis_x).argmax(1).cpu()
            figure = grid_image(run.vis_x.cpu(), run.vis_y, pred, train_ds.num_classes, title=f"epoch {epoch + 1}")
            figure.save(run.run_dir.figures / f"epoch_{epoch + 1:03d}.png")
            for tracker in run.trackers:
                tracker.log_figure(figure, epoch + 1)
        for tracker in run.trackers:
            tracker.log_epoch(row, epoch + 1)
        meta = {"model": raw_model.seglab_spec, "epoch": epoch + 1, "best": run.best, "stale": run.stale,
                "best_metric": cfg.best_metric, "metrics": numeric(row), "class_names": list(train_ds.class_names),
                "image_size": cfg.image_size, "interpolation": cfg.interpolation, "geometry": cfg.geometry().to_dict()}
        saved = model if run.ema is not None else raw_model  # with --ema the average is the model
        live = None
        if run.ema is not None:  # what resuming needs besides: the live weights and how many steps were averaged
            live = {**raw_model.state_dict(), "n_averaged": run.ema.n_averaged}
        if due:
            write_confusion(val.matrix, train_ds.class_names, run.run_dir.path, f"{val_ds.split}, epoch {epoch + 1}")
        save_checkpoint(run.run_dir.checkpoint("last"), saved, meta, run.optimizer, run.scheduler, train=live)
        if improved:
            save_checkpoint(run.run_dir.checkpoint("best"), saved, meta)
    if due:
        article = f"IoU(article) {row['article_iou']:.4f}, " if "article_iou" in row else ""
        run.log(f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
                f"pixel acc {row['pixel_accuracy']:.4f}, {article}mIoU {row['miou']:.4f}, lr {row['lr']:.3g}, "
                f"{seconds:.1f}s, {row['images_per_s']:.1f} img/s; scored: {val.protocol}")
        run.log(f"  {val_ds.split} {per_class_line(row, train_ds.class_names)}")
    else:
        run.log(f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f}, lr {row['lr']:.3g}, "
                f"{seconds:.1f}s, {row['images_per_s']:.1f} img/s (evaluated every {cfg.eval_every} epochs)")
    if cfg.early_stop and run.stale >= cfg.early_stop and epoch + 1 < cfg.epochs:
        run.stopped = True
        run.log(f"early stop after epoch {epoch + 1}: {cfg.best_metric} has not improved for {run.stale} "
                f"evaluation(s) (--early-stop {cfg.early_stop}); best.safetensors holds the best")
    dist.barrier()


def _finish(run: _Run) -> TrainResult:
    """The progress GIF and the curves (rank 0); the last epoch's metrics, the same on every rank."""
    dist.broadcast_buffers(run.raw_model)
    figures = run.run_dir.figures
    if dist.is_main():
        save_gif(sorted(figures.glob("epoch_*.png")), figures / "progress.gif")
        if run.history:
            save_curves(run.history, figures / "curves.png")
    evaluated = [r for r in run.history if r.get("val_loss") not in ("", None)]
    final = numeric(evaluated[-1]) if evaluated else {}
    for tracker in run.trackers:
        tracker.finish(dataclasses.asdict(run.cfg), final,
                       [run.run_dir.checkpoint("best"), figures / "curves.png", figures / "progress.gif"])
    if dist.is_distributed():
        box = [final]
        torch.distributed.broadcast_object_list(box, src=0)
        final = box[0]
    return TrainResult(run_dir=run.run_dir.path, metrics=final, history=run.history, model=run.raw_model)
