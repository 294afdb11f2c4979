"""Checkpoints and image folders for the inference and CLI tests, made without training (seconds, not minutes).

:func:`write_checkpoint` writes the layout ``centrum train`` writes (a Lightning checkpoint: the training
module's ``state_dict`` with ``model.``/``objective.`` keys, and the ``centrum`` stamp holding the config as a
plain dict), around a randomly initialised small CNN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from centrum.models import build_model

SIZE = 24


def tiny_config(kind: str = "ctl", recipe: str = "dml", bnneck: bool = True) -> dict:
    """A config dict as ``ExperimentConfig.to_dict()`` writes it: a small CNN at 24 x 24."""
    transform_options = {"resize": SIZE} if recipe == "dml" else {}
    objective = {"kind": "ctl"} if kind == "ctl" else {"kind": "metric", "loss": "triplet"}
    return {
        "name": f"tiny-{kind}",
        "seed": 0,
        "data": {"dataset": "csv", "root": None, "options": {}, "recipe": recipe, "image_size": [SIZE, SIZE],
                 "transform_options": transform_options, "test_batch_size": 16, "on_error": "raise"},
        "model": {"backbone": "small_cnn", "pretrained": None, "last_stride": None, "pooling": "avg",
                  "embedding_dim": None if kind == "ctl" else 16, "bnneck": bnneck},
        "objective": objective,
        "evaluation": {"protocols": [], "metric": "cosine", "recall_ks": [], "distractor_labels": []},
    }  # fmt: skip


def write_checkpoint(path: Path, kind: str = "ctl", recipe: str = "dml", seed: int = 0) -> tuple[Path, torch.nn.Module]:
    """Write a centrum checkpoint of a random small CNN; return its path and the model (eval mode)."""
    torch.manual_seed(seed)
    config = tiny_config(kind, recipe, bnneck=kind == "ctl")
    num_classes = 4
    model_kwargs = dict(config["model"])
    model = build_model(num_classes=num_classes if kind == "ctl" else None, **model_kwargs)
    with torch.no_grad():  # non-trivial BNNeck statistics, so that eval mode matters
        if model.bnneck is not None:
            model.bnneck.running_mean.uniform_(-0.1, 0.1)
            model.bnneck.running_var.uniform_(0.5, 2.0)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    if kind == "ctl":
        state["objective.center_loss.centers"] = torch.randn(num_classes, model.feature_dim)
    checkpoint = {
        "epoch": 1,
        "global_step": 2,
        "pytorch-lightning_version": "2.5.0",
        "state_dict": state,
        "hyper_parameters": {"config": config, "num_classes": num_classes},
        "centrum": {"format": "centrum-checkpoint-v1", "version": "0.1.0", "config": config,
                    "num_classes": num_classes},
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path, model.eval()


def write_image(path: Path, seed: int, size: int = SIZE) -> Path:
    """A distinct random RGB image (PNG)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def write_class_folders(root: Path, classes: dict[str, list[int]]) -> Path:
    """``root/<class>/<seed>.png`` for every seed listed under each class name."""
    for name, seeds in classes.items():
        for seed in seeds:
            write_image(root / name / f"{seed}.png", seed)
    return root
