"""Experiment tracking: the per-epoch scalars of metrics.csv, the prediction grid, the config and the best
checkpoint, sent to TensorBoard (event files in the run directory) and/or MLflow (a tracking URI; default a local
SQLite store, ./mlflow.db, with artifacts in ./mlartifacts: MLflow 3 refuses new plain ./mlruns file stores unless
MLFLOW_ALLOW_FILE_STORE=true). metrics.csv stays the record; a tracker is a copy for the tools teams already run.

Each tracker needs its own extra (`pip install 'seglab[tensorboard]'`, `'seglab[mlflow]'`) and is imported only
when asked for.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from .errors import SeglabError

TRACKERS = ("tensorboard", "mlflow")
TENSORBOARD_DIR = "tensorboard"  # inside the run directory
MLFLOW_RUN_FILE = "mlflow.json"  # inside the run directory: the MLflow run a resumed run continues
EXPERIMENT = "seglab"  # the MLflow experiment every run goes to


class Tracker(Protocol):
    def log_epoch(self, row: dict[str, Any], epoch: int) -> None: ...

    def log_figure(self, picture: Image.Image, epoch: int) -> None: ...

    def finish(self, config: dict[str, Any], final: dict[str, float], artifacts: list[Path]) -> None: ...


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in row.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f) and k != "epoch":
            out[k] = f
    return out


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """A config as flat scalars (hyperparameters must be scalars for both tools): lists and dicts as JSON."""
    return {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in config.items()}


def _tag(key: str) -> str:
    """metrics.csv's column -> a grouped tag: train/loss, val/miou, val/iou_pet, lr."""
    if key == "train_loss":
        return "train/loss"
    if key == "val_loss":
        return "val/loss"
    if key in ("lr", "seconds", "images_per_s"):
        return f"train/{key}"
    return f"val/{key}"


class TensorBoardTracker:
    """Event files in RUN_DIR/tensorboard/, read by `tensorboard --logdir RUN_DIR`."""

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise SeglabError("--log tensorboard needs tensorboard: pip install 'seglab[tensorboard]'") from None
        self.folder = run_dir / TENSORBOARD_DIR
        self.writer = SummaryWriter(str(self.folder))

    def log_epoch(self, row: dict[str, Any], epoch: int) -> None:
        for key, value in _numbers(row).items():
            self.writer.add_scalar(_tag(key), value, epoch)
        self.writer.flush()

    def log_figure(self, picture: Image.Image, epoch: int) -> None:
        self.writer.add_image("predictions", np.asarray(picture.convert("RGB")), epoch, dataformats="HWC")

    def finish(self, config: dict[str, Any], final: dict[str, float], artifacts: list[Path]) -> None:
        metrics = {f"hparam/{k}": v for k, v in _numbers(final).items()}
        self.writer.add_hparams(_flat(config), metrics, run_name=".")
        self.writer.close()


class MlflowTracker:
    """One MLflow run per seglab run (a resumed run continues it): params, metrics per epoch, figures, best weights."""

    def __init__(self, run_dir: Path, config: dict[str, Any], uri: str | None):
        try:
            import mlflow
        except ImportError:
            raise SeglabError("--log mlflow needs mlflow: pip install 'seglab[mlflow]'") from None
        self.mlflow = mlflow
        self.uri = uri or f"sqlite:///{Path('mlflow.db').resolve()}"
        mlflow.set_tracking_uri(self.uri)
        record = run_dir / MLFLOW_RUN_FILE
        try:
            if mlflow.get_experiment_by_name(EXPERIMENT) is None:
                # Beside a local database, artifacts go to a folder next to it (else MLflow picks ./mlruns).
                local = self.uri.startswith("sqlite:///")
                where = (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri() if local else None
                mlflow.create_experiment(EXPERIMENT, artifact_location=where)
            mlflow.set_experiment(EXPERIMENT)
            if record.exists():  # a resumed run goes on in the same MLflow run
                self.run = mlflow.start_run(run_id=json.loads(record.read_text())["run_id"])
            else:
                self.run = mlflow.start_run(run_name=run_dir.name)
                record.write_text(json.dumps({"run_id": self.run.info.run_id, "tracking_uri": self.uri}))
                mlflow.log_params(_flat(config))
        except Exception as e:  # noqa: BLE001 - an unreachable server, a bad URI: say which, before training
            raise SeglabError(f"--log mlflow: cannot start a run at {self.uri} ({type(e).__name__}: {e}); check "
                              "--mlflow-uri") from None

    def log_epoch(self, row: dict[str, Any], epoch: int) -> None:
        self.mlflow.log_metrics(_numbers(row), step=epoch)

    def log_figure(self, picture: Image.Image, epoch: int) -> None:
        self.mlflow.log_image(picture, f"figures/epoch_{epoch:03d}.png")

    def finish(self, config: dict[str, Any], final: dict[str, float], artifacts: list[Path]) -> None:
        for path in artifacts:
            if path.exists():
                self.mlflow.log_artifact(str(path), "checkpoints" if path.suffix == ".safetensors" else "figures")
        self.mlflow.end_run()


def make_trackers(names: str, run_dir: Path, config: dict[str, Any], mlflow_uri: str | None = None) -> list[Tracker]:
    """The trackers `--log` asks for ("none", "tensorboard", "mlflow" or "tensorboard,mlflow")."""
    trackers: list[Tracker] = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name == "none":
            continue
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(run_dir))
        elif name == "mlflow":
            trackers.append(MlflowTracker(run_dir, config, mlflow_uri))
        else:
            raise SeglabError(f"--log {names!r}: unknown tracker {name!r}; choose from {', '.join(TRACKERS)}")
    return trackers


__all__ = ["MLFLOW_RUN_FILE", "TENSORBOARD_DIR", "TRACKERS", "MlflowTracker", "TensorBoardTracker", "Tracker",
           "make_trackers"]
