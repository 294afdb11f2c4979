"""The Lightning training step, logging included, makes no host synchronisation once warmed up, for the CTL
recipe (both centroid variants) and the metric recipe with Symmetrical Synthesis; and ``trainer.compile`` trains.

Counted on the CPU with a dispatch mode (``tests/syncs.py``) from ``on_train_batch_start`` to
``on_train_batch_end``: the forward pass, the objective, both backward passes, the centers' SGD step, Adam's step
and every ``self.log``. Lightning turns the logged tensors into numbers only at ``log_every_n_steps``, set beyond
the run here, and the checkpoint writer only every ``checkpoint_every_n_steps`` steps, switched off.
"""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from centrum.training import train
from syncs import SyncCounter


class CountSyncs(Callback):
    """Counts host syncs inside each training batch after the first ``warmup`` ones (first-call caches)."""

    def __init__(self, warmup: int = 2) -> None:
        self.warmup, self.per_step, self._counter = warmup, [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.warmup:
            self._counter = SyncCounter()
            self._counter.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.per_step.append(dict(self._counter.counts))
            self._counter = None


@pytest.mark.parametrize(
    ("kind", "objective"),
    [
        ("ctl", {}),
        ("ctl", {"centroid_variant": "official"}),
        ("symm", {}),
        ("symm", {"loss": "npair", "loss_options": {}, "symm_options": {"candidates": "pair"}}),
    ],
    ids=["ctl-paper", "ctl-official", "triplet+symm", "npair+symm-pair"],
)
def test_training_step_makes_no_host_sync(kind, objective, stripes_splits, tiny_config, tmp_path):
    config = tiny_config(kind, max_epochs=2, log_every_n_steps=10_000, checkpoint_every_n_steps=0)
    for field, value in objective.items():
        setattr(config.objective, field, value)
    counter = CountSyncs()
    train(config, tmp_path / "run", splits=stripes_splits, enable_progress_bar=False, callbacks=[counter])
    assert len(counter.per_step) >= 4
    assert all(not counts for counts in counter.per_step), counter.per_step


def test_a_sync_in_the_step_is_seen(stripes_splits, tiny_config, tmp_path, monkeypatch):
    """The counting has teeth: the old per-step ``float()`` of every logged term is caught."""
    from centrum.training import module

    original = module.RetrievalModule.training_step

    def step_with_float(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        float(loss)
        return loss

    monkeypatch.setattr(module.RetrievalModule, "training_step", step_with_float)
    config = tiny_config("symm", max_epochs=1, log_every_n_steps=10_000, checkpoint_every_n_steps=0)
    counter = CountSyncs()
    train(config, tmp_path / "run", splits=stripes_splits, enable_progress_bar=False, callbacks=[counter])
    assert counter.per_step and all(counts.get("_local_scalar_dense") for counts in counter.per_step)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ctl", "symm"])
def test_compiled_training_matches_eager(kind, stripes_splits, tiny_config, tmp_path):
    """``trainer.compile=default`` trains the same model as eager, to float rounding, over two epochs."""
    torch._dynamo.reset()
    eager = train(tiny_config(kind, max_epochs=2), tmp_path / "eager", splits=stripes_splits, enable_progress_bar=False)
    compiled = train(
        tiny_config(kind, max_epochs=2, compile="default"),
        tmp_path / "compiled",
        splits=stripes_splits,
        enable_progress_bar=False,
    )
    for (name, a), (_, b) in zip(eager.model.state_dict().items(), compiled.model.state_dict().items(), strict=True):
        if a.is_floating_point():
            torch.testing.assert_close(b, a, atol=2e-3, rtol=2e-3, msg=name)
