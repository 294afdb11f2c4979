"""Read what a training run logged (test helper)."""

from __future__ import annotations

import csv
from pathlib import Path


def epoch_losses(run_dir: Path) -> list[float]:
    """The training loss of every epoch (``train/loss_epoch`` of the run folder's ``metrics.csv``), in order."""
    with (run_dir / "metrics.csv").open(newline="") as f:
        return [float(r["train/loss_epoch"]) for r in csv.DictReader(f) if r.get("train/loss_epoch")]
