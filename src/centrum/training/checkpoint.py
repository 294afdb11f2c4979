"""Loading a trained model back from a centrum checkpoint, with a clear error for anything else."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from centrum.training.config import ExperimentConfig, config_from_dict
from centrum.training.module import CHECKPOINT_FORMAT, RetrievalModule


@dataclass
class TrainedModel:
    """A trained embedding model in eval mode, with the experiment config it was trained with."""

    model: nn.Module
    config: ExperimentConfig
    num_classes: int
    path: Path


def load_trained_model(path: str | Path, map_location: str | torch.device = "cpu") -> TrainedModel:
    """Rebuild the model of a checkpoint written by ``centrum train`` and load its weights exactly.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that is not a centrum
    checkpoint (e.g. a bare backbone state dict or another project's checkpoint) or whose weights do not
    fit the model its config describes (the message counts the missing, unexpected and mismatched keys).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise ValueError(f"checkpoint {path} could not be read as a PyTorch file: {exc}") from exc
    stamp = checkpoint.get("centrum") if isinstance(checkpoint, dict) else None
    if not isinstance(stamp, dict) or stamp.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a centrum checkpoint (no '{CHECKPOINT_FORMAT}' stamp); "
            "train with `centrum train`, or load bare backbone weights with model.pretrained=PATH"
        )
    config = config_from_dict(stamp["config"])
    module = RetrievalModule(config, num_classes=int(stamp["num_classes"]), pretrained=False)
    state = checkpoint.get("state_dict", {})
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"checkpoint {path} does not fit the model its config describes: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(mismatched)} mismatched keys "
            f"(first: {(missing + unexpected + mismatched)[:3]})"
        )
    module.load_state_dict(state)
    model = module.model.to(map_location).eval()
    return TrainedModel(model=model, config=config, num_classes=module.num_classes, path=path)
