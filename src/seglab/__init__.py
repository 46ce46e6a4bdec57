"""seglab: efficient semantic image segmentation in PyTorch.

The public API: models (build_model, list_models and the model classes), data (build_dataset), training
(TrainConfig, train), evaluation (evaluate, ConfusionMatrix) and inference (predict).
"""

from .config import TrainConfig
from .data import build_dataset
from .errors import SeglabError
from .metrics import ConfusionMatrix
from .models import VisionTransformerArgs, VisionTransformerForSegmentation, build_model, list_models
from .models.segformer import Segformer, SegformerConfig
from .predict import predict
from .train import evaluate, train

__version__ = "0.1.0"

__all__ = [
    "ConfusionMatrix",
    "Segformer",
    "SegformerConfig",
    "SeglabError",
    "TrainConfig",
    "VisionTransformerArgs",
    "VisionTransformerForSegmentation",
    "build_dataset",
    "build_model",
    "evaluate",
    "list_models",
    "predict",
    "train",
]
