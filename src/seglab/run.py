"""The run directory: its layout, written and read in one place.

    RUN_DIR/config.yaml        the complete TrainConfig (`seglab train --config` repeats the run)
    RUN_DIR/metrics.csv        one row per finished epoch (rewritten atomically after each epoch)
    RUN_DIR/train.log          the run's printed lines; its "model ...; device D; world size W" line records the device
    RUN_DIR/confusion.csv      the last evaluation's confusion matrix (pixel counts, rows: truth)
    RUN_DIR/checkpoints/       last.safetensors (weights + optimizer) and best.safetensors (weights)
    RUN_DIR/figures/           epoch_NNN.png, progress.gif, curves.png, confusion.png

train.py writes a run through RunDir; compare and `seglab eval` read it through RunDir (find_run_dir finds the
run of a checkpoint). Loading a run's model goes through checkpoint.find_checkpoint / load_model.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .atomic import atomic_write
from .checkpoint import CHECKPOINTS_DIR, checkpoint_path
from .errors import SeglabError

CONFIG = "config.yaml"
METRICS = "metrics.csv"
TEXT_COLUMNS = ("protocol",)  # metrics.csv's columns that are not numbers: how the epoch was scored


def numeric(row: dict[str, Any]) -> dict[str, float]:
    """A metrics row's numbers as floats (empty cells and TEXT_COLUMNS left out)."""
    return {k: float(v) for k, v in row.items() if v not in ("", None) and k not in TEXT_COLUMNS}
LOG = "train.log"
FIGURES_DIR = "figures"
_DEVICE_LINE = re.compile(r"; device (\S+?); world size (\d+)")


@dataclass(frozen=True)
class RunDir:
    """A run directory and the files it holds."""

    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def figures(self) -> Path:
        return self.path / FIGURES_DIR

    def checkpoint(self, which: str) -> Path:
        """checkpoints/{which}.safetensors (which: last or best)."""
        return checkpoint_path(self.path, which)

    def is_run(self) -> bool:
        return self.config_path.is_file()

    def make_folders(self) -> None:
        for folder in (self.checkpoints, self.figures):
            folder.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ config.yaml

    def read_config(self) -> dict[str, Any]:
        """config.yaml as written (a mapping of TrainConfig fields); a missing or damaged file is an error."""
        if not self.is_run():
            raise SeglabError(f"{self.path} is not a run directory (no {CONFIG}); pass a folder written by "
                              "`seglab train`")
        try:
            raw = yaml.safe_load(self.config_path.read_text()) or {}
        except yaml.YAMLError as e:
            raise SeglabError(f"config file is not valid YAML ({' '.join(str(e).split())}): {self.config_path}") \
                from None
        except (OSError, UnicodeDecodeError) as e:
            raise SeglabError(f"cannot read {self.config_path} ({e})") from None
        if not isinstance(raw, dict):
            raise SeglabError(f"config file must hold a mapping of TrainConfig fields: {self.config_path}")
        return raw

    # ------------------------------------------------------------------ metrics.csv

    def read_metrics(self) -> list[dict[str, str]]:
        """metrics.csv's rows as written (strings); [] before the first epoch."""
        if not self.metrics_path.exists():
            return []
        try:
            with open(self.metrics_path, newline="") as f:
                return list(csv.DictReader(f))
        except (csv.Error, UnicodeDecodeError) as e:
            raise SeglabError(f"metrics file is damaged ({e}): {self.metrics_path}") from None

    def read_history(self) -> list[dict[str, float]]:
        """metrics.csv's rows as numbers (empty cells and TEXT_COLUMNS left out)."""
        try:
            return [numeric(r) for r in self.read_metrics()]
        except ValueError as e:
            raise SeglabError(f"metrics file is damaged ({e}): {self.metrics_path}") from None

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite metrics.csv with `rows`, atomically: a crash mid-write leaves the previous file whole."""
        if not rows:
            return
        fields = list(dict.fromkeys(k for r in rows for k in r))

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(self.metrics_path, write)

    # ------------------------------------------------------------------ train.log

    def log(self, line: str) -> None:
        """Append a line to train.log."""
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    def read_device(self) -> str:
        """The device the run trained on, from train.log's start line (start_line); "?" when not recorded."""
        if not self.log_path.exists():
            return "?"
        found = _DEVICE_LINE.search(self.log_path.read_text(errors="replace"))
        return found.group(1) if found else "?"


def start_line(model: str, parameters: int, dataset: str, n_train: int, n_val: int, size: str, device: str,
               world: int) -> str:
    """train.log's first line of a run (RunDir.read_device reads the device back from it)."""
    return (f"model {model}: {parameters:,} parameters; data {dataset}: {n_train} train / {n_val} val at {size}; "
            f"device {device}; world size {world}")


def find_run_dir(path: str | Path) -> RunDir | None:
    """The run directory a checkpoint file, its checkpoints/ folder or the run directory itself belongs to."""
    p = Path(path)
    for folder in (p, p.parent, p.parent.parent):
        run = RunDir(folder)
        if run.is_run() and run.checkpoints.is_dir():
            return run
    return None


__all__ = ["CONFIG", "FIGURES_DIR", "LOG", "METRICS", "TEXT_COLUMNS", "RunDir", "find_run_dir", "numeric", "start_line"]
