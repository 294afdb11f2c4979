"""A synthetic retrieval dataset that a tiny CNN can learn in seconds: oriented stripes.

The class is the stripes' orientation; colours, phase and noise are nuisances. Training classes and test
classes have different orientations (class-disjoint), so better retrieval on the test classes after
training means the model learned orientation rather than memorising training classes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from centrum.data import DatasetSplits, SampleList


def stripes(angle_deg: float, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` RGB uint8 images (n x size x size x 3) of stripes at ``angle_deg`` with random colours and phase."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = np.deg2rad(angle_deg)
    coord = xx * np.cos(theta) + yy * np.sin(theta)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        phase = rng.uniform(0, 2 * np.pi)
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * coord / 6.0 + phase)
        fg, bg = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        img = wave[..., None] * fg + (1 - wave[..., None]) * bg + rng.normal(0, 12, (size, size, 3))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images


def make_stripes_splits(
    train_classes: int = 6, test_classes: int = 6, per_class: int = 16, size: int = 24, seed: int = 0
) -> DatasetSplits:
    """In-memory "products"-protocol splits: train on ``train_classes`` angles, query/gallery on others."""
    rng = np.random.default_rng(seed)
    step = 180.0 / train_classes
    train_angles = [i * step for i in range(train_classes)]
    test_angles = [i * 180.0 / test_classes + step / 2 for i in range(test_classes)]
    train = np.concatenate([stripes(a, per_class, size, rng) for a in train_angles])
    test = np.concatenate([stripes(a, per_class, size, rng) for a in test_angles])
    train_labels = np.repeat(np.arange(train_classes), per_class)
    test_labels = np.repeat(np.arange(100, 100 + test_classes), per_class)
    is_query = np.tile(np.arange(per_class) < per_class // 4, test_classes)

    def split(images: np.ndarray, labels: np.ndarray, rows: np.ndarray, name: str) -> SampleList:
        return SampleList([f"stripes/{name}/{r}" for r in rows], labels[rows], images=images, rows=rows)

    all_rows = np.arange(len(test_labels))
    return DatasetSplits(
        name="stripes",
        protocol="products",
        train=split(train, train_labels, np.arange(len(train_labels)), "train"),
        query=split(test, test_labels, all_rows[is_query], "test"),
        gallery=split(test, test_labels, all_rows[~is_query], "test"),
        num_train_classes=train_classes,
        train_class_ids=np.arange(train_classes),
    )


def write_stripes_csv(root: Path, **kwargs) -> Path:
    """Write the stripes splits as PNG files and a users'-own-data CSV (path,label,camera,split)."""
    splits = make_stripes_splits(**kwargs)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for split_name, samples in (("train", splits.train), ("query", splits.query), ("gallery", splits.gallery)):
        for i in range(len(samples)):
            rel = f"{split_name}/{i:04d}.png"
            (root / split_name).mkdir(exist_ok=True)
            samples.load(i).save(root / rel)
            rows.append((rel, int(samples.labels[i]), 0, split_name))
    csv_path = root / "images.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "camera", "split"])
        writer.writerows(rows)
    return csv_path


@pytest.fixture(scope="session")
def stripes_splits() -> DatasetSplits:
    """Six training orientations, six unseen test orientations, 16 images each, 24x24."""
    return make_stripes_splits()


@pytest.fixture(scope="session")
def stripes_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stripes dataset on disk as a CSV of PNG files."""
    return write_stripes_csv(tmp_path_factory.mktemp("stripes"))


def make_tiny_config(kind: str, **trainer):
    """A CPU config for the stripes data: small CNN at 24x24, 6 classes x 4 images per batch."""
    from centrum.training import config_from_dict

    objective = (
        {"kind": "ctl", "center_weight": 5e-4, "centroid_weight": 1.0}
        if kind == "ctl"
        else {"kind": "metric", "loss": "triplet", "loss_options": {"margin": 0.2, "mining": "hard"}, "symm": True}
    )
    model = (
        {"backbone": "small_cnn", "embedding_dim": None, "bnneck": True}
        if kind == "ctl"
        else {"backbone": "small_cnn", "embedding_dim": 32, "bnneck": False}
    )
    return config_from_dict(
        {
            "name": f"stripes-{kind}",
            "seed": 0,
            "data": {
                "dataset": "csv",
                "recipe": "dml",
                "image_size": [24, 24],
                "p": 6,
                "m": 4,
                "num_workers": 0,
                "test_batch_size": 64,
                "transform_options": {"scale": [0.8, 1.0], "resize": 24},
            },
            "model": model,
            "objective": objective,
            "optimizer": {"lr": 3e-3, "weight_decay": 0.0, "warmup_epochs": 0, "milestones": []},
            "trainer": {
                "max_epochs": 12,
                "accelerator": "cpu",
                "eval_every": 0,
                "log_every_n_steps": 1,
                "checkpoint_every_n_steps": 2,
                **trainer,
            },
            "evaluation": {"protocols": ["products", "products-centroids"]},
        }
    )


@pytest.fixture
def tiny_config():
    """``tiny_config(kind, **trainer_fields)``: a CPU config (``kind`` "ctl" or "symm") for the stripes data."""
    return make_tiny_config
