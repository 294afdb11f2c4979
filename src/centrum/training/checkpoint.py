"""Checkpoints of a run: writing them atomically inside the run folder, and loading a trained model back.

Writing: Lightning's own writer stages a checkpoint in the system's temporary folder and then copies it
beside the target, so a full disk was reported with a path outside the run folder and left a partial
``.last.ckpt.tmp`` behind. :class:`RunFolderCheckpointIO` writes the temporary file in the target's own
folder, fsyncs it, renames it over the target and removes it on any failure; :func:`disk_full_message` turns
a full disk into a message that names the run folder.

Loading (safe, ``weights_only``, no Lightning) is :func:`centrum.inference.load_model`; :func:`load_trained_model`
adds the :class:`~centrum.training.config.ExperimentConfig` that training code works with.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from centrum.inference import Preprocess, load_model
from centrum.io import atomic_write
from centrum.training.config import ExperimentConfig, config_from_dict


class RunFolderCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing atomically beside the target (never in the system's temp folder)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        """``torch.save`` ``checkpoint`` to a temporary file in ``path``'s folder, fsync it, rename it over ``path``."""
        if storage_options is not None:
            raise TypeError("RunFolderCheckpointIO takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target, "wb") as handle:
            torch.save(checkpoint, handle)


def save_checkpoint_atomically(trainer: L.Trainer, path: Path) -> None:
    """Write the trainer's full state to ``path``, replacing it atomically (see :class:`RunFolderCheckpointIO`,
    which the trainer of :func:`centrum.training.train` uses; any other trainer gets the same write here)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(trainer.strategy.checkpoint_io, RunFolderCheckpointIO):
        trainer.save_checkpoint(path, weights_only=False)
        return
    checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
    if trainer.is_global_zero:
        RunFolderCheckpointIO().save_checkpoint(checkpoint, path)
    trainer.strategy.barrier("centrum.save_checkpoint")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is the file system saying that it is out of space."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        current = current.__cause__ or current.__context__
    return False


def disk_full_message(run_dir: Path) -> str:
    """One line for a run stopped by a full disk: the run folder, the space left, and what survives."""
    try:
        free = f"{shutil.disk_usage(run_dir).free / 1e6:.1f} MB free now"
    except OSError:
        free = "free space unknown"
    last = run_dir / "checkpoints" / "last.ckpt"
    kept = (
        f"its last checkpoint {last} is intact: free some space, then resume the run"
        if last.is_file()
        else "no checkpoint was written yet: free some space, then start the run again"
    )
    return f"the disk holding the run folder {run_dir} is full (a write into the run failed; {free}): {kept}"


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
