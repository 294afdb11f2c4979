"""Analyses do not change the training: a tiny run with and without every study callback ends with bit-identical
weights, while a callback that draws one random number unprotected does change them (so the check has teeth)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from centrum.study import study_from_dict
from centrum.study.callbacks import EmbeddingSnapshots, FinalState, StepCost, preserved_rng, weights_digest
from centrum.training import train


def test_preserved_rng_puts_every_stream_back() -> None:
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    with preserved_rng():
        random.random(), np.random.rand(3), torch.rand(5)
        for _ in torch.utils.data.DataLoader(list(range(4)), batch_size=2):  # draws a base seed from torch's stream
            pass
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


class NoisyGradients(Callback):
    """Training that draws from torch's global stream at every step, as EfficientNet-Lite0's drop-connect (the
    Symm studies' backbone) does: an analysis that moved the stream would change every later draw."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        for p in pl_module.parameters():
            if p.grad is not None:
                p.grad.add_(torch.randn_like(p.grad), alpha=1e-2)


class DrawsOnce(Callback):
    """An analysis written without care: one torch draw before training (iterating any DataLoader does this)."""

    def on_train_start(self, trainer, pl_module) -> None:
        torch.rand(1)


@pytest.fixture(scope="module")
def tiny_config(stripes_csv_study: Path, study_data):
    data = study_data(stripes_csv_study)
    data["overrides"] = {
        "trainer.max_epochs": 2,
        "trainer.limit_train_batches": 3,
        "trainer.eval_every": 0,
    }
    study = study_from_dict(data)
    return study.config(study.cells()[1], 0)  # triplet + Symm, seed 0


def _weights(config, run_dir: Path, callbacks: list) -> str:
    result = train(config, run_dir, enable_progress_bar=False, callbacks=[NoisyGradients(), *callbacks])
    return weights_digest(result.model)


@pytest.fixture(scope="module")
def plain_digest(tiny_config, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The weights of the tiny run trained with no analysis."""
    return _weights(tiny_config, tmp_path_factory.mktemp("plain"), [])


def test_every_analysis_leaves_the_weights_bit_identical(tiny_config, plain_digest: str, tmp_path: Path) -> None:
    run = tmp_path / "analysed"
    analyses = [StepCost(run), FinalState(run), EmbeddingSnapshots(run, [0, 1, 2], classes=4, per_class=8)]
    assert _weights(tiny_config, run, analyses) == plain_digest
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["epoch-000.npz", "epoch-001.npz", "epoch-002.npz"]
    assert (run / "final_state.json").is_file() and (run / "ranked_lists.png").is_file()


@pytest.mark.slow
def test_a_careless_analysis_does_change_the_weights(tiny_config, plain_digest: str, tmp_path: Path) -> None:
    """The check above has teeth: one unprotected draw before training changes the final weights."""
    assert _weights(tiny_config, tmp_path / "careless", [DrawsOnce()]) != plain_digest
