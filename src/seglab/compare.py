"""compare_runs(): runs side by side. One table (Markdown + CSV), the validation curves of every run on shared
axes, and the same validation images predicted by each run's best checkpoint (the article's Figure 1 layout).

Runs on different datasets or class sets are refused; a run still in progress is compared as far as it got and
marked so.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from .errors import SeglabError
from .run import RunDir

# The config.yaml fields compare reads: what identifies the validation data and how it was read (a folder run's
# masks and ignore value), the model and its start weights, and the run's length.
_FIELDS = ("model", "recipe", "dataset", "data_root", "val_split", "val_samples", "image_size", "interpolation",
           "masks", "ignore_index", "epochs", "seed", "model_options", "encoder_weights", "init_from")


@dataclass
class RunSummary:
    """What compare_runs reads from one run directory."""

    run_dir: Path
    config: dict[str, Any]  # the fields of the run's config.yaml compare needs (TrainConfig's defaults if absent)
    history: list[dict[str, float]]  # metrics.csv, one row per finished epoch
    class_names: list[str]
    device: str
    label: str = ""  # how figures name the run (its folder name, or its path when two runs share a name)
    raw_config: dict[str, Any] = field(default_factory=dict)  # config.yaml as written

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def in_progress(self) -> bool:
        return len(self.history) < int(self.config["epochs"])

    @property
    def status(self) -> str:
        done, total = len(self.history), int(self.config["epochs"])
        if not self.history:
            return f"in progress: no epoch finished yet (0/{total})"
        return f"in progress: {done}/{total} epochs" if self.in_progress else f"{done} epoch{'s' if done != 1 else ''}"


@dataclass
class Comparison:
    """The result of compare_runs: one row per run (table columns), the Markdown table, and the files written."""

    runs: list[RunSummary]
    rows: list[dict[str, Any]]
    markdown: str
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def read_run(run_dir: str | Path) -> RunSummary:
    """Read a run directory's config.yaml, metrics.csv and train.log (without loading any weights)."""
    from .config import TrainConfig

    run = RunDir(Path(run_dir))
    raw = run.read_config()
    defaults = TrainConfig()
    config = {name: raw.get(name, getattr(defaults, name)) for name in _FIELDS}
    history = run.read_history()
    class_names = [k[4:] for k in history[0] if k.startswith("iou_")] if history else []
    if not class_names:
        class_names = _class_names_from_checkpoint(run.path)
    run_dir, device = run.path, run.read_device()
    return RunSummary(run_dir, config, history, class_names, device, label=run_dir.name, raw_config=raw)


_NOT_FLAGS = ("recipe", "out_dir", "run_name", "quiet", "model_options")


def train_command(config: dict[str, Any]) -> str:
    """The `seglab train` command that repeats a run: its model, recipe and every field that differs from what the
    recipe sets (where it trained and what it was called left out)."""
    import shlex

    from .config import TrainConfig, apply_recipe

    recipe = config.get("recipe") or "article"
    try:
        base = {**dataclasses.asdict(TrainConfig()), **apply_recipe({}, recipe)}
    except SeglabError:  # a recipe this version does not know: list every field
        base = {}
    parts = ["seglab", "train", "--model", str(config.get("model", base.get("model"))), "--recipe", recipe]
    for key, value in config.items():
        if key in _NOT_FLAGS or key == "model" or (key in base and base[key] == value):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + key.replace("_", "-"))
        elif value is not None:
            parts += [flag, str(value)]
    for key, value in (config.get("model_options") or {}).items():
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        parts += ["-O", f"{key}={text}"]
    return " ".join(shlex.quote(p) for p in parts)


def _class_names_from_checkpoint(run_dir: Path) -> list[str]:
    from .checkpoint import find_checkpoint, read_checkpoint

    try:
        _, header = read_checkpoint(find_checkpoint(run_dir))
    except SeglabError:
        return []
    return list(header.get("class_names", []))


def _dataset_identity(run: RunSummary) -> tuple:
    """What makes two runs' validation data the same: dataset, its root, the split, its size (and the seed that
    generates the synthetic data)."""
    c = run.config
    root = str(Path(c["data_root"]).expanduser().resolve()) if c["data_root"] else None
    seed = c["seed"] if c["dataset"] == "synthetic" else None
    return (c["dataset"], root, c["val_split"], c["val_samples"], seed)


def _describe_data(run: RunSummary) -> str:
    dataset, root, split, samples, seed = _dataset_identity(run)
    parts = [dataset] + ([f"at {root}"] if root else []) + [f"split {split}"]
    if samples:
        parts.append(f"first {samples}")
    if seed is not None:
        parts.append(f"seed {seed}")
    return " ".join(parts)


def check_comparable(runs: Sequence[RunSummary]) -> None:
    """Refuse runs on different validation data or class sets, naming each run and what it used."""
    if len({_dataset_identity(r) for r in runs}) > 1:
        listed = "; ".join(f"{r.run_dir}: {_describe_data(r)}" for r in runs)
        raise SeglabError(f"cannot compare runs on different datasets ({listed}); compare runs validated on the "
                          "same data")
    known = [r for r in runs if r.class_names]
    if len({tuple(r.class_names) for r in known}) > 1:
        listed = "; ".join(f"{r.run_dir}: {', '.join(r.class_names)}" for r in known)
        raise SeglabError(f"cannot compare runs with different class sets ({listed})")


def _parameters(run: RunSummary) -> int:
    from .models import build_model

    with torch.device("meta"):  # shapes only: no memory, no compute
        model = build_model(run.config["model"], num_classes=max(1, len(run.class_names)) if run.class_names else 3,
                            image_size=int(run.config["image_size"]),
                            **{k: v for k, v in (run.config["model_options"] or {}).items() if k != "weights"})
    return sum(p.numel() for p in model.parameters())


def table_row(run: RunSummary) -> dict[str, Any]:
    """One row of the comparison table (numbers as floats; NaN where a run has no finished epoch)."""
    h = run.history
    last = h[-1] if h else {}
    nan = float("nan")
    row: dict[str, Any] = {
        "run": run.label,
        "model": run.config["model"],
        "parameters": _parameters(run),
        "weights": start_weights(run.config),
        "recipe": run.config["recipe"],
        "epochs": run.status,
        "best_pixel_accuracy": max((r["pixel_accuracy"] for r in h), default=nan),
        "last_pixel_accuracy": last.get("pixel_accuracy", nan),
        "article_iou": last.get("article_iou", nan),
        "miou": last.get("miou", nan),
    }
    for name in run.class_names:
        row[f"iou_{name}"] = last.get(f"iou_{name}", nan)
    row["train_minutes"] = sum(r.get("seconds", 0.0) for r in h) / 60.0
    speeds = [r["images_per_s"] for r in h if "images_per_s" in r]
    row["images_per_s"] = sum(speeds) / len(speeds) if speeds else nan
    row["device"] = run.device
    row["in_progress"] = run.in_progress
    row["command"] = train_command(run.raw_config or run.config)
    return row


def start_weights(config: dict[str, Any]) -> str:
    """Where the run's weights started: "random", its --encoder-weights or its --init-from."""
    sources = [str(config[k]) for k in ("encoder_weights", "init_from") if config[k]]
    return " + ".join(sources) or "random"


_DECIMALS = {"train_minutes": 2, "images_per_s": 1}


def _cell(value: Any, key: str = "") -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "-" if value != value else f"{value:.{_DECIMALS.get(key, 4)}f}"
    return str(value)


_HEADERS = {"run": "run", "model": "model", "parameters": "parameters", "weights": "start weights",
            "recipe": "recipe", "epochs": "epochs",
            "best_pixel_accuracy": "best pixel acc.", "last_pixel_accuracy": "last pixel acc.",
            "article_iou": "article IoU", "miou": "mIoU", "train_minutes": "train min", "images_per_s": "img/s",
            "device": "device"}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (in-progress runs marked with * after their name)."""
    hidden = ("in_progress", "command")
    keys = [k for k in rows[0] if k not in hidden]
    for r in rows[1:]:
        keys += [k for k in r if k not in keys and k not in hidden]
    head = [_HEADERS.get(k, k.replace("iou_", "IoU ")) for k in keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = [_cell(r.get(k, float("nan")), k) for k in keys]
        if r["in_progress"]:
            cells[0] += " *"
        lines.append("| " + " | ".join(cells) + " |")
    if any(r["in_progress"] for r in rows):
        lines.append("\n\\* still in progress (or stopped before its last epoch): compared as far as it got.")
    lines.append("\nCommands behind the rows:\n")
    lines += [f"- {r['run']}: `{r['command']}`" for r in rows if r.get("command")]
    return "\n".join(lines) + "\n"


def compare_runs(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path | None = "compare",
    num_images: int = 7,
    device: str = "cpu",
) -> Comparison:
    """Compare training runs: writes OUT/compare.md, compare.csv, curves.png and predictions.png.

    The table: model, parameters, start weights (random, a pretrained encoder or --init-from), recipe, epochs,
    best and last pixel accuracy, the article's IoU, mIoU, per-class IoU, training minutes, images/s and device.
    curves.png: validation loss, pixel accuracy and mIoU per epoch, and pixel accuracy against training minutes,
    every run on the same axes. predictions.png: the first `num_images`
    validation images, their truth, and each run's prediction from its best checkpoint. out_dir=None writes nothing.
    """
    if not run_dirs:
        raise SeglabError("no runs to compare; pass one or more run directories")
    runs = [read_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    if len(set(names)) < len(names):  # two runs with one folder name (in different parents): label by path
        for r in runs:
            r.label = str(r.run_dir)
    check_comparable(runs)
    rows = [table_row(r) for r in runs]
    result = Comparison(runs=runs, rows=rows, markdown=markdown_table(rows))
    if out_dir is None:
        return result
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SeglabError(f"--out {out} is a file; choose a folder for the comparison")
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(result.markdown)
    with open(out / "compare.csv", "w", newline="") as f:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    result.files.update(table=out / "compare.md", csv=out / "compare.csv")
    if any(r.history for r in runs):
        save_comparison_curves(runs, out / "curves.png")
        result.files["curves"] = out / "curves.png"
    try:
        image = predictions_figure(runs, num_images, device)
    except SeglabError as e:  # e.g. the data is not on this machine: the table and curves still stand
        result.notes.append(f"predictions figure skipped: {e}")
    else:
        if image is not None:
            image.save(out / "predictions.png")
            result.files["predictions"] = out / "predictions.png"
    return result


def _label(run: RunSummary) -> str:
    return run.label + (" (in progress)" if run.in_progress else "")


def save_comparison_curves(runs: Sequence[RunSummary], path: str | Path) -> None:
    """Validation loss, pixel accuracy, mIoU per epoch and pixel accuracy per training minute, runs on shared axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    panels = [("val_loss", "validation loss", "epoch"), ("pixel_accuracy", "pixel accuracy", "epoch"),
              ("miou", "mIoU", "epoch"), ("pixel_accuracy", "pixel accuracy", "training minutes")]
    for i, run in enumerate(r for r in runs if r.history):
        style = dict(color=f"C{i}", marker="o", markersize=3, linestyle="--" if run.in_progress else "-")
        epochs = [int(r["epoch"]) for r in run.history]
        minutes, t = [], 0.0
        for r in run.history:
            t += r.get("seconds", 0.0) / 60.0
            minutes.append(t)
        for ax, (key, ylabel, xlabel) in zip(axes, panels):
            xs = minutes if xlabel == "training minutes" else epochs
            ys = [r.get(key, float("nan")) for r in run.history]
            ax.plot(xs, ys, label=_label(run), **style)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("validation curves (dashed: run in progress)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def validation_split(run: RunSummary, image_size: int | None = None):
    """The run's validation split as its training saw it (at image_size, default the run's)."""
    from .config import TrainConfig
    from .evaluate import load_split

    c = run.config
    cfg = TrainConfig(dataset=c["dataset"], data_root=c["data_root"], seed=c["seed"], image_size=int(c["image_size"]),
                      interpolation=c["interpolation"], quiet=True, ignore_index=c["ignore_index"],
                      masks=c["masks"] or {})  # a folder run's masks are read as the run read them
    return load_split(cfg, c["val_split"], c["val_samples"], image_size)


@torch.inference_mode()
def predictions_figure(runs: Sequence[RunSummary], num_images: int = 7, device: str = "cpu"):
    """The first `num_images` validation images, their truth, and each run's prediction from its best checkpoint
    (resized by nearest to the largest run's size), as one PIL image; None when no run has a checkpoint yet."""
    import torch.nn.functional as F

    from .checkpoint import find_checkpoint, load_model
    from .data.augment import to_float
    from .viz import panels_image

    with_ckpt = []
    for run in runs:
        try:
            with_ckpt.append((run, find_checkpoint(run.run_dir, "best")))
        except SeglabError:
            continue
    if not with_ckpt:
        return None
    size = max(int(r.config["image_size"]) for r, _ in with_ckpt)
    shown = validation_split(with_ckpt[0][0], size)
    n = min(num_images, len(shown))
    panels = []
    for run, ckpt in with_ckpt:
        ds = validation_split(run)
        model, header = load_model(ckpt, device)
        x = to_float(ds.images[:n].to(device))  # (n, 3, h, w)
        pred = model(x).argmax(1, keepdim=True).float()  # (n, 1, h, w)
        pred = F.interpolate(pred, size=(size, size), mode="nearest")[:, 0].long().cpu()  # (n, S, S)
        panels.append((f"{_label(run)}: {run.config['model']}, best epoch {header.get('epoch', '?')}", pred))
    num_classes = len(with_ckpt[0][0].class_names) or shown.num_classes
    return panels_image(to_float(shown.images[:n]), shown.masks[:n].long(), panels, num_classes, per_row=min(7, n))


__all__ = ["Comparison", "RunSummary", "compare_runs", "read_run"]
