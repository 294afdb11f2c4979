"""Loading a trained model back from a centrum checkpoint with its typed experiment config.

The loading itself (safe, ``weights_only``, no Lightning) is :func:`centrum.inference.load_model`; this
wrapper adds the :class:`~centrum.training.config.ExperimentConfig` that training code works with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from centrum.inference import Preprocess, load_model
from centrum.training.config import ExperimentConfig, config_from_dict


@dataclass
class TrainedModel:
    """A trained embedding model in eval mode, with the experiment config it was trained with."""

    model: nn.Module
    config: ExperimentConfig
    num_classes: int
    path: Path
    preprocess: Preprocess


def load_trained_model(path: str | Path, map_location: str | torch.device = "cpu") -> TrainedModel:
    """Rebuild the model of a checkpoint written by ``centrum train`` and load its weights exactly (see
    :func:`centrum.inference.load_model`: ``FileNotFoundError``/``ValueError`` for missing, foreign, unsafe or
    mismatching files); the config comes back as an :class:`ExperimentConfig`."""
    trained = load_model(path, map_location)
    return TrainedModel(
        model=trained.model,
        config=config_from_dict(trained.config),
        num_classes=trained.num_classes,
        path=trained.path,
        preprocess=trained.preprocess,
    )
