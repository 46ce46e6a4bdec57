"""TrainConfig: one dataclass describes a training run completely; saved as config.yaml in its run directory.

Recipes are named presets of TrainConfig fields; explicit values given after a recipe win.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from .errors import SeglabError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("step", "cosine", "onecycle", "poly", "none")
AMP_MODES = ("auto", "bf16", "off")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class TrainConfig:
    """Every value of a training run. The defaults are the article's recipe (Matani & Singh, Part 4)."""

    # what to train
    model: str = "vit"
    model_options: dict[str, Any] = field(default_factory=dict)  # overrides of the model's config, e.g. embed_size
    init_from: str | None = None  # weights to start from (a seglab checkpoint or HF Segformer weights)
    # data
    dataset: str = "oxford-pets"
    data_root: str | None = None
    download: bool = False
    train_split: str = "trainval"
    val_split: str = "test"
    image_size: int = 128
    interpolation: str = "nearest"  # image resize; masks always nearest
    train_samples: int | None = None  # synthetic: how many; other datasets: use only the first N
    val_samples: int | None = None
    skip_bad: bool = False
    # optimisation
    epochs: int = 50
    batch_size: int = 64  # global: split across ranks under torchrun
    eval_batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 4e-4
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    scheduler: str = "step"
    step_size: int = 12  # StepLR, stepped once per epoch
    gamma: float = 0.8
    warmup_epochs: float = 0.0  # linear warm-up, for cosine / poly
    label_smoothing: float = 0.0
    # augmentation (on the training device)
    hflip: float = 0.5
    contrast: float = 0.3
    brightness: float = 0.0
    saturation: float = 0.0
    # running
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # bf16 autocast on CUDA when auto
    compile: bool = False
    out_dir: str = "runs"
    run_name: str | None = None
    num_vis: int = 21  # fixed validation images drawn each epoch (the article: 21, 7 per row)
    quiet: bool = False
    recipe: str = "article"

    def validate(self) -> None:
        """Reject impossible values before any work starts, naming the field.

        Checks every field's type (for a TrainConfig built directly), ranges, choices, and the model options
        (by building the model on the meta device: no memory, no data, milliseconds).
        """
        def bad(name: str, why: str) -> SeglabError:
            return SeglabError(f"invalid config: {name} = {getattr(self, name)!r}: {why}")

        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _coerce(f.name, getattr(self, f.name), hints[f.name], "invalid config")
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise bad(f.name, "must be a finite number")
        for name in ("epochs", "batch_size", "eval_batch_size", "image_size", "step_size"):
            if getattr(self, name) < 1:
                raise bad(name, "must be at least 1")
        if not self.lr > 0:
            raise bad("lr", "must be positive")
        if self.weight_decay < 0:
            raise bad("weight_decay", "must not be negative")
        if not 0 < self.gamma <= 1:
            raise bad("gamma", "must be in (0, 1]")
        for name in ("hflip",):
            if not 0 <= getattr(self, name) <= 1:
                raise bad(name, "must be a probability in [0, 1]")
        for name in ("contrast", "brightness", "saturation", "warmup_epochs", "label_smoothing", "num_vis"):
            if getattr(self, name) < 0:
                raise bad(name, "must not be negative")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"choose one of {', '.join(OPTIMIZERS)}")
        if self.scheduler not in SCHEDULERS:
            raise bad("scheduler", f"choose one of {', '.join(SCHEDULERS)}")
        if self.amp not in AMP_MODES:
            raise bad("amp", f"choose one of {', '.join(AMP_MODES)}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise bad("device", f"choose one of {', '.join(DEVICES)} or cuda:N")
        for name in ("train_samples", "val_samples"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise bad(name, "must be at least 1 (or unset)")
        if self.momentum < 0:
            raise bad("momentum", "must not be negative")
        if self.label_smoothing > 1:
            raise bad("label_smoothing", "must be in [0, 1]")
        if self.scheduler == "onecycle" and self.warmup_epochs >= self.epochs:
            raise bad("warmup_epochs", f"must be less than epochs ({self.epochs}) for the onecycle scheduler")
        if not 0 <= self.seed < 2**63:
            raise bad("seed", "must be in 0 .. 2**63 - 1")
        from .data import DATASETS
        from .data.cache import INTERPOLATIONS

        if self.dataset not in DATASETS:
            raise bad("dataset", f"choose one of {', '.join(DATASETS)}")
        if self.interpolation not in INTERPOLATIONS:
            raise bad("interpolation", f"choose one of {', '.join(INTERPOLATIONS)}")
        for name in ("train_split", "val_split", "out_dir"):
            if not getattr(self, name).strip():
                raise bad(name, "must not be empty")
        for name in ("init_from", "data_root"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise bad(name, "must not be empty (leave it unset instead)")
        if self.run_name is not None and (self.run_name.strip() in ("", ".", "..") or Path(self.run_name).is_absolute()
                                          or ".." in Path(self.run_name).parts):
            raise bad("run_name", "must be a folder name inside out_dir")
        self._check_model()

    def _check_model(self) -> None:
        """Build the model on the meta device: unknown or impossible model options fail now, before any data."""
        import torch

        from .models import build_model

        options = {k: v for k, v in self.model_options.items() if k != "weights"}  # weights are read later
        try:
            with torch.device("meta"):
                build_model(self.model, num_classes=3, image_size=self.image_size, **options)
        except SeglabError as e:
            raise SeglabError(f"invalid config: model {self.model!r}, model_options {options}: {e}") from None
        except Exception as e:  # noqa: BLE001 - a wrongly typed option fails in the model's own code
            raise SeglabError(f"invalid config: model {self.model!r}, model_options {options}: "
                              f"{type(e).__name__}: {e}") from None

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(dataclasses.asdict(self), sort_keys=False))

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        """Build from a dict, rejecting unknown keys and values of the wrong type, naming the key."""
        if not isinstance(values, dict):
            raise SeglabError(f"{source}: expected a mapping of TrainConfig fields, not {type(values).__name__}")
        hints = get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in set(values) - known)
        if unknown:
            raise SeglabError(f"{source}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
        out = {}
        for key, value in values.items():
            out[key] = _coerce(key, value, hints[key], source)
        cfg = cls(**out)
        try:
            cfg.validate()
        except SeglabError as e:
            raise SeglabError(f"{source}: {e}") from None
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
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


RECIPES: dict[str, dict[str, Any]] = {
    # The authors' notebook (Part 4): batch 64, Adam 4e-4, StepLR(12, 0.8) per epoch, 50 epochs, flip + contrast 0.3.
    "article": dict(epochs=50, batch_size=64, optimizer="adam", lr=4e-4, weight_decay=0.0, scheduler="step",
                    step_size=12, gamma=0.8, warmup_epochs=0.0, hflip=0.5, contrast=0.3, interpolation="nearest"),
    # The series' CNN, Part 2: Adam 1e-3, StepLR(7, 0.7), 20 epochs.
    "segnet-part2": dict(epochs=20, batch_size=64, optimizer="adam", lr=1e-3, scheduler="step", step_size=7,
                         gamma=0.7, hflip=0.5, contrast=0.3, interpolation="nearest"),
    # Part 3 (depthwise-separable CNN): Adam 1e-3, no scheduler, 20 epochs.
    "segnet-part3": dict(epochs=20, batch_size=64, optimizer="adam", lr=1e-3, scheduler="none", hflip=0.5,
                         contrast=0.3, interpolation="nearest"),
    # SegFormer's own recipe (AdamW, poly decay, warm-up), with a learning rate that works from scratch.
    "segformer": dict(optimizer="adamw", lr=6e-4, weight_decay=0.01, scheduler="poly", warmup_epochs=2.0,
                      batch_size=32, interpolation="bilinear"),
    # seglab's fastest route to the article's accuracy (benchmarks/README.md, "The fast recipe"): AdamW at a
    # higher peak lr with a 1-epoch warm-up and cosine decay to 0 over 30 epochs instead of Adam + StepLR over
    # 50; images resized bilinearly (the article: nearest) so the model sees smooth images; same batch,
    # augmentation and loss. On GPUs it runs in bf16 (amp auto); on CPUs with AVX512-BF16/AMX add --amp bf16.
    "fast": dict(epochs=30, batch_size=64, optimizer="adamw", lr=1e-3, weight_decay=0.05, scheduler="cosine",
                 warmup_epochs=1.0, hflip=0.5, contrast=0.3, interpolation="bilinear"),
}


def apply_recipe(values: dict[str, Any], recipe: str) -> dict[str, Any]:
    """The recipe's fields, overridden by `values` (explicit options win)."""
    if recipe not in RECIPES:
        raise SeglabError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
    return {**RECIPES[recipe], **values, "recipe": recipe}
