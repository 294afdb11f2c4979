"""Checks a run makes before it creates anything: the device, the data's root, and whether the data can fill
a P x M batch. Each failure is one line that names the config field and the value at fault."""

from __future__ import annotations

from pathlib import Path

import torch

from centrum.data import PKSampler
from centrum.training.config import DataConfig
from centrum.training.datamodule import RetrievalDataModule

#: datasets read from a default location when ``data.root`` is not set
_DEFAULT_ROOTS = {"fashion-mnist", "fashionmnist"}

OMNIGLOT_HINT = (
    "Omniglot is not shipped with centrum and never downloaded: put images_background.zip and "
    "images_evaluation.zip (github.com/brendenlake/omniglot, folder python/) in a folder and set "
    "data.root=FOLDER (`--set data.root=FOLDER` for a study); the project's dev checkout has ../shared/data/omniglot"
)


def check_accelerator(accelerator: str) -> None:
    """Refuse an unknown ``trainer.accelerator``, or one whose device is not visible here."""
    valid = ("auto", "cpu", "gpu", "cuda", "mps")
    if accelerator not in valid:
        raise ValueError(f"trainer.accelerator must be one of {', '.join(valid)}, got {accelerator!r}")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"trainer.accelerator={accelerator}: no CUDA device is visible (torch.cuda.is_available() is False); "
            "use trainer.accelerator=cpu (or --device cpu)"
        )
    if accelerator == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError("trainer.accelerator=mps: no Apple MPS device is visible; use trainer.accelerator=cpu")


def check_data_root(data: DataConfig) -> None:
    """Refuse a ``data.root`` that is not set (for a dataset without a default location) or does not exist,
    naming the field and the path; for Omniglot, also say where it comes from."""
    key = data.dataset.lower().replace("_", "-")
    hint = f"; {OMNIGLOT_HINT}" if key == "omniglot" else ""
    if data.root is None:
        if key in _DEFAULT_ROOTS:
            return
        what = "the CSV file that lists" if key == "csv" else "the folder that holds"
        raise ValueError(
            f"data.root is not set: dataset {data.dataset} needs {what} its images; set data.root=PATH{hint}"
        )
    path = Path(data.root).expanduser()
    if not path.exists():
        relative = "" if path.is_absolute() else f" (relative to the current folder {Path.cwd()})"
        raise FileNotFoundError(f"data.root {data.root} does not exist{relative}{hint}")


def check_batches(datamodule: RetrievalDataModule) -> None:
    """Refuse a P x M batch that the training classes cannot fill (read the dataset to count them)."""
    labels = datamodule.splits.train.labels
    try:
        PKSampler(labels, p=datamodule.p, m=datamodule.m)
    except ValueError as exc:
        raise ValueError(f"data.p={datamodule.p}: {exc}") from exc
