"""fp16 mixed precision: a step whose gradient overflows is skipped by the loss scaler, counted in the logs
(``train/skipped_steps``), and never raises; the centers' SGD step is skipped with it.

Lightning refuses ``precision="16-mixed"`` on a CPU accelerator by name, so the test hands it the same plugin a
GPU run gets, built for the CPU (``MixedPrecision`` with ``torch.amp.GradScaler("cpu")``): the module's code
path is the GPU one. The overflow is real: one step's loss is multiplied by inf.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.precision import MixedPrecision

from centrum.training.module import RetrievalModule
from centrum.training.run import build_datamodule
from run_logs import epoch_losses

OVERFLOW_STEP = 9


class Record(Callback):
    def __init__(self) -> None:
        self.skipped, self.scales, self.centers = [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.centers.append(pl_module.objective.center_loss.centers.detach().clone())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.skipped.append(float(pl_module._skipped_steps))
        self.scales.append(float(trainer.precision_plugin.scaler.get_scale()))


def test_an_overflowing_fp16_step_is_skipped_and_counted(stripes_splits, tiny_config):
    config = tiny_config("ctl", max_epochs=4, log_every_n_steps=1)
    module = RetrievalModule(config, num_classes=stripes_splits.num_train_classes)
    forward, calls = module.objective.forward, {"n": 0}

    def overflow_once(outputs, labels):
        terms = forward(outputs, labels)
        calls["n"] += 1
        if calls["n"] == OVERFLOW_STEP:
            terms["loss"] = terms["loss"] * float("inf")
        return terms

    module.objective.forward = overflow_once
    record = Record()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=config.trainer.max_epochs,
        plugins=[MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))],
        callbacks=[record],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=build_datamodule(config, stripes_splits))  # no exception
    steps = len(record.skipped)
    assert steps == trainer.global_step >= OVERFLOW_STEP + 2
    skipped_at = [i + 1 for i in range(steps) if record.skipped[i] > (record.skipped[i - 1] if i else 0)]
    assert OVERFLOW_STEP in skipped_at
    # a step is counted as skipped exactly when the scaler lowered its scale
    lowered = [i + 1 for i in range(1, steps) if record.scales[i] < record.scales[i - 1]]
    assert set(lowered) <= set(skipped_at) and len(skipped_at) - len(lowered) <= 1  # step 1 has no predecessor
    # the centers did not move in the overflowing step, and everything stayed finite
    i = OVERFLOW_STEP - 1
    after = record.centers[i + 1] if i + 1 < steps else module.objective.center_loss.centers.detach()
    assert torch.equal(record.centers[i], after)
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert float(trainer.callback_metrics["train/skipped_steps_epoch"]) == record.skipped[-1]


def test_bf16_mixed_trains_on_the_cpu_like_fp32(stripes_splits, tiny_config, tmp_path):
    """bf16-mixed is really applied (its weights differ from the fp32 run's) and trains as well as fp32 within
    the noise of a tiny run."""
    from centrum.training import train

    results = {
        precision: train(
            tiny_config("symm", max_epochs=6, precision=precision),
            tmp_path / precision,
            splits=stripes_splits,
            enable_progress_bar=False,
        )
        for precision in ("32-true", "bf16-mixed")
    }
    bf16, fp32 = results["bf16-mixed"], results["32-true"]
    assert all(torch.isfinite(p).all() for p in bf16.model.parameters())
    a, b = bf16.model.state_dict(), fp32.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())  # autocast took effect
    losses = {k: epoch_losses(r.run_dir) for k, r in results.items()}
    for curve in losses.values():  # both learn: the last epochs' loss well under the first's
        assert np.mean(curve[-2:]) < 0.8 * np.mean(curve[:2])
    # and alike: per-epoch losses within 15 % of each other, final mAP within 0.1 (0.30 vs 0.32 measured)
    np.testing.assert_allclose(losses["bf16-mixed"], losses["32-true"], rtol=0.15)
    assert abs(bf16.metrics["products"]["mAP"] - fp32.metrics["products"]["mAP"]) < 0.1
