"""The embedding-collapse monitor: the spread is what its definition says, a constant embedding warns, a model
that learns does not, and watching changes nothing in the training."""

from __future__ import annotations

import csv
import itertools
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from centrum.data import build_transform
from centrum.training import train
from centrum.training.collapse import (
    SPREAD_METRIC,
    EmbeddingCollapseWarning,
    EmbeddingSpreadMonitor,
    embedding_spread,
)


def brute_force_spread(x: torch.Tensor) -> float:
    """Mean of 1 - cos over ordered pairs i != j, one pair at a time."""
    values = [
        1.0 - float(torch.nn.functional.cosine_similarity(x[i], x[j], dim=0))
        for i, j in itertools.permutations(range(len(x)), 2)
    ]
    return sum(values) / len(values)


def test_spread_hand_computed_values() -> None:
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])
    assert embedding_spread(torch.stack([e1, 2 * e1, 5 * e1])) == pytest.approx(0.0, abs=1e-12)  # one direction
    assert embedding_spread(torch.stack([e1, e2])) == pytest.approx(1.0)  # orthogonal
    assert embedding_spread(torch.stack([e1, -e1])) == pytest.approx(2.0)  # opposite
    assert embedding_spread(torch.stack([e1, e2, e1])) == pytest.approx(2 / 3)  # pairs: 1, 0, 1 (each twice)
    assert embedding_spread(torch.zeros(4, 3)) == 0.0  # no direction at all: collapsed
    assert torch.isnan(torch.tensor(embedding_spread(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))))
    with pytest.raises(ValueError, match="at least 2"):
        embedding_spread(torch.ones(1, 3))


def test_spread_matches_brute_force() -> None:
    x = torch.randn(9, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert embedding_spread(x) == pytest.approx(brute_force_spread(x), abs=1e-9)


class ConstantEmbedder(L.LightningModule):
    """Learns a parameter it never uses for its output: every image embeds to the same vector."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tensor([0.3, -1.0, 2.0]).expand(images.shape[0], 3)

    def training_step(self, batch, batch_idx) -> torch.Tensor:
        return (self.weight * batch[0].mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_constant_embedding_warns_and_logs_zero(stripes_splits, tmp_path: Path) -> None:
    monitor = EmbeddingSpreadMonitor(
        stripes_splits.train, build_transform("dml", train=False, size=(24, 24), resize=24), num_images=20
    )
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="", version=""),
        callbacks=[monitor],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    data = DataLoader(TensorDataset(torch.randn(8, 3)), batch_size=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(ConstantEmbedder(), data)
    collapse = [w for w in caught if issubclass(w.category, EmbeddingCollapseWarning)]
    assert len(collapse) == 1  # once per collapse, not once per epoch
    message = str(collapse[0].message)
    assert "\n" not in message
    assert "epoch 1" in message and "collapsed" in message and "mining=semihard" in message
    assert [epoch for epoch, _ in monitor.history] == [1, 2]
    assert all(spread == pytest.approx(0.0, abs=1e-12) for _, spread in monitor.history)
    with (tmp_path / "metrics.csv").open(newline="") as f:
        logged = [float(r[SPREAD_METRIC]) for r in csv.DictReader(f) if r.get(SPREAD_METRIC)]
    assert logged == pytest.approx([0.0, 0.0], abs=1e-9)


def _weights(result) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in result.model.state_dict().items()}


def test_learning_model_does_not_warn_and_watching_changes_nothing(tiny_config, stripes_splits, tmp_path) -> None:
    """Two epochs of the tiny Symm config with and without the monitor: identical weights and metrics; the
    monitor (defaults: the data module's training split and test transform) logs a healthy spread, no warning."""
    config = tiny_config("symm", max_epochs=2, limit_train_batches=2, checkpoint_every_n_steps=0)
    plain = train(config, tmp_path / "plain", splits=stripes_splits, progress="none")
    monitor = EmbeddingSpreadMonitor(num_images=32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        watched = train(config, tmp_path / "watched", splits=stripes_splits, progress="none", callbacks=[monitor])
    assert not [w for w in caught if issubclass(w.category, EmbeddingCollapseWarning)]
    a, b = _weights(plain), _weights(watched)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert watched.metrics == plain.metrics
    assert [epoch for epoch, _ in monitor.history] == [1, 2]
    assert all(spread > 0.05 for _, spread in monitor.history)
    with (tmp_path / "watched" / "metrics.csv").open(newline="") as f:
        logged = [float(r[SPREAD_METRIC]) for r in csv.DictReader(f) if r.get(SPREAD_METRIC)]
    assert logged == pytest.approx([spread for _, spread in monitor.history])


def test_needs_samples_without_a_retrieval_datamodule(tmp_path: Path) -> None:
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        callbacks=[EmbeddingSpreadMonitor()],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(ValueError, match="needs samples="):
        trainer.fit(ConstantEmbedder(), DataLoader(TensorDataset(torch.randn(4, 3)), batch_size=4))
    with pytest.raises(ValueError, match="at least 2"):
        EmbeddingSpreadMonitor(num_images=1)


def test_demo_table_shows_the_spread_column() -> None:
    from centrum.demo import demo_table

    metrics = {"products": {"mAP": 0.5, "Acc@1": 0.875}, "products-centroids": {"mAP": 0.25, "Acc@1": 1.0}}
    table = demo_table({"triplet": metrics, "CTL model": metrics}, {"triplet": 0.00021})
    assert table.splitlines()[0].endswith("| embedding spread |")
    assert "| triplet | 50.0 | 87.5 | 25.0 | 100.0 | 0.000 |" in table
    assert "| CTL model | 50.0 | 87.5 | 25.0 | 100.0 | |" in table


def test_spread_check_images_sets_the_check_and_zero_turns_it_off(tiny_config, stripes_splits, tmp_path) -> None:
    """``trainer.spread_check_images``: 0 logs no spread (and trains the same weights), 8 logs one per epoch."""
    runs = {}
    for images in (0, 8):
        config = tiny_config("symm", max_epochs=2, limit_train_batches=2, spread_check_images=images)
        runs[images] = train(config, tmp_path / f"run-{images}", splits=stripes_splits, progress="none")
        with (tmp_path / f"run-{images}" / "metrics.csv").open(newline="") as f:
            logged = [r[SPREAD_METRIC] for r in csv.DictReader(f) if r.get(SPREAD_METRIC)]
        assert len(logged) == (2 if images else 0)
    a, b = _weights(runs[0]), _weights(runs[8])
    assert all(torch.equal(a[key], b[key]) for key in a)
