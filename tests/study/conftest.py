"""A tiny study on the stripes data: 2 cells (triplet with and without Symm) x 2 seeds, 1 epoch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# the stripes dataset of the training tests (a tiny class-disjoint task a small CNN learns in seconds)
_spec = importlib.util.spec_from_file_location(
    "training_conftest", Path(__file__).parents[1] / "training" / "conftest.py"
)
_training = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_training)
write_stripes_csv = _training.write_stripes_csv


def tiny_study_data(csv_path: Path) -> dict:
    """Study data (as a study file would hold) for the stripes CSV at ``csv_path``."""
    return {
        "name": "tiny",
        "description": "Triplet with and without Symm on synthetic stripes.",
        "base": {
            "name": "stripes-triplet",
            "seed": 0,
            "data": {
                "dataset": "csv",
                "root": str(csv_path),
                "recipe": "dml",
                "image_size": [24, 24],
                "p": 6,
                "m": 4,
                "num_workers": 0,
                "test_batch_size": 64,
                "transform_options": {"scale": [0.8, 1.0], "resize": 24},
            },
            "model": {"backbone": "small_cnn", "embedding_dim": 32, "bnneck": False},
            "objective": {"kind": "metric", "loss": "triplet", "loss_options": {"margin": 0.2, "mining": "hard"}},
            "optimizer": {"lr": 3e-3, "weight_decay": 0.0, "warmup_epochs": 0, "milestones": []},
            "trainer": {
                "max_epochs": 1,
                "accelerator": "cpu",
                "eval_every": 1,
                "log_every_n_steps": 1,
                "checkpoint_every_n_steps": 2,
            },
            "evaluation": {"protocols": ["products", "products-centroids"]},
        },
        "grid": {"objective.symm": [False, True]},
        "seeds": [0, 1],
        "metric": "products/map",
        "compare": [{"vary": "objective.symm", "base": False, "treatment": True, "claim": "Symm raises mAP"}],
        "tsne": {"classes": 4, "per_class": 8},
    }


@pytest.fixture(scope="session")
def stripes_csv_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stripes dataset written as a CSV of PNG files (for a study that reads it from disk)."""
    return write_stripes_csv(tmp_path_factory.mktemp("stripes-study"))


@pytest.fixture(scope="session")
def study_data():
    """``study_data(csv_path)``: the tiny study's data, as a study file would hold it."""
    return tiny_study_data
