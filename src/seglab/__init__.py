"""seglab: efficient semantic image segmentation in PyTorch.

The public API: models (build_model, list_models and the model classes), data (build_dataset, inspect_dataset),
training (TrainConfig, train, build_loss), evaluation (evaluate, ConfusionMatrix), inference (predict), comparing
runs (compare_runs) and deployment (export_onnx, create_app).

Names are imported on first use (PEP 562), so `import seglab` (and the command line) costs nothing and imports no
torch until a name that needs it is used.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "ConfusionMatrix": ".metrics",
    "Segformer": ".models.segformer",
    "SegformerConfig": ".models.segformer",
    "SeglabError": ".errors",
    "TrainConfig": ".config",
    "VisionTransformerArgs": ".models.vit",
    "VisionTransformerForSegmentation": ".models.vit",
    "build_dataset": ".data",
    "build_loss": ".losses",
    "build_model": ".models",
    "compare_runs": ".compare",
    "create_app": ".serve.app",
    "evaluate": ".evaluate",
    "export_onnx": ".export",
    "inspect_dataset": ".data.inspect",
    "list_models": ".models",
    "predict": ".predict",
    "train": ".train",
}

__all__ = [
    "ConfusionMatrix",
    "Segformer",
    "SegformerConfig",
    "SeglabError",
    "TrainConfig",
    "VisionTransformerArgs",
    "VisionTransformerForSegmentation",
    "build_dataset",
    "build_loss",
    "build_model",
    "compare_runs",
    "create_app",
    "evaluate",
    "export_onnx",
    "inspect_dataset",
    "list_models",
    "predict",
    "train",
]


# Public functions named like the module that defines them (seglab.train, seglab.evaluate, seglab.predict).
_SHADOWED = frozenset(name for name, module in _EXPORTS.items() if module == f".{name}")


class _Package(types.ModuleType):
    """The seglab package: `seglab.train`, `seglab.evaluate` and `seglab.predict` stay the public functions.

    Importing a submodule makes the import system set it as an attribute of its package (`seglab.train = <module>`),
    which would hide the function of the same name depending on what was imported first; here the function keeps
    the name (the module stays in sys.modules, so `from seglab.train import ...` is unchanged)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value  # once imported, a plain attribute
        return value
    raise AttributeError(f"module 'seglab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from .compare import compare_runs
    from .config import TrainConfig
    from .data import build_dataset
    from .data.inspect import inspect_dataset
    from .errors import SeglabError
    from .export import export_onnx
    from .losses import build_loss
    from .metrics import ConfusionMatrix
    from .models import build_model, list_models
    from .models.segformer import Segformer, SegformerConfig
    from .models.vit import VisionTransformerArgs, VisionTransformerForSegmentation
    from .predict import predict
    from .serve.app import create_app
    from .evaluate import evaluate
    from .train import train
