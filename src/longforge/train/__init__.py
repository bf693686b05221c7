"""Training: the lean loop (`trainer.py`) and its typed recipe (`config.py`)."""

from .config import DataSection, ModelSection, OptimSection, TrainConfig
from .trainer import Trainer, lr_at, train, weighted_token_loss

__all__ = [
    "DataSection",
    "ModelSection",
    "OptimSection",
    "TrainConfig",
    "Trainer",
    "lr_at",
    "train",
    "weighted_token_loss",
]
