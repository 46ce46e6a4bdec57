"""seglab: efficient semantic image segmentation in PyTorch."""

from .errors import SeglabError
from .models import VisionTransformerArgs, VisionTransformerForSegmentation, build_model, list_models

__version__ = "0.1.0"
