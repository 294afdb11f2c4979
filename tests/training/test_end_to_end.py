"""End to end, per recipe, on the synthetic stripes data: training lowers the loss, retrieval on unseen
classes improves over the untrained model, the checkpoint reloads to identical embeddings, and a run
killed mid-epoch resumes from its last checkpoint and finishes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from centrum.inference import evaluate_model
from centrum.training import RetrievalModule, load_trained_model, train
from centrum.training.run import build_datamodule
from run_logs import epoch_losses


def query_embeddings(model: torch.nn.Module, config, splits) -> np.ndarray:
    dm = build_datamodule(config, splits)
    _, query, _ = evaluate_model(model, splits, dm.eval_dataloader(splits.query), dm.eval_dataloader(splits.gallery))
    return query.embeddings


@pytest.mark.parametrize("recipe", ["ctl", "symm"])
def test_training_learns_and_checkpoint_reloads_exactly(
    recipe: str, stripes_splits, tiny_config, tmp_path: Path
) -> None:
    config = tiny_config(recipe)
    L.seed_everything(0)
    untrained = RetrievalModule(config, num_classes=stripes_splits.num_train_classes).model
    dm = build_datamodule(config, stripes_splits)
    before, _, _ = evaluate_model(
        untrained, stripes_splits, dm.eval_dataloader(stripes_splits.query), dm.eval_dataloader(stripes_splits.gallery)
    )

    result = train(config, tmp_path / "run", splits=stripes_splits, enable_progress_bar=False)

    losses = epoch_losses(result.run_dir)
    assert len(losses) == config.trainer.max_epochs
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    # unseen orientations are retrieved better than by the untrained network, per image and with centroids
    assert result.metrics["products"]["mAP"] > before["products"]["mAP"] + 0.05
    assert result.metrics["products-centroids"]["mAP"] > before["products-centroids"]["mAP"]
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert saved["metrics"]["products"]["mAP"] == pytest.approx(result.metrics["products"]["mAP"])
    for name in ("config.yaml", "metrics.csv", "model.ckpt", "checkpoints/last.ckpt"):
        assert (result.run_dir / name).exists(), name

    reloaded = load_trained_model(result.checkpoint)
    assert reloaded.config == config
    np.testing.assert_array_equal(
        query_embeddings(result.model, config, stripes_splits), query_embeddings(reloaded.model, config, stripes_splits)
    )


def test_symm_run_logs_the_share_of_synthetic_negatives(stripes_splits, tiny_config, tmp_path: Path) -> None:
    config = tiny_config("symm", max_epochs=1)
    result = train(config, tmp_path / "run", splits=stripes_splits, enable_progress_bar=False)
    with (result.run_dir / "metrics.csv").open() as f:
        ratios = [
            float(r["train/synthetic_ratio_step"]) for r in csv.DictReader(f) if r.get("train/synthetic_ratio_step")
        ]
    assert ratios and all(0.0 <= r <= 1.0 for r in ratios)


def test_center_loss_sgd_step_does_not_depend_on_its_weight(stripes_splits, tiny_config, tmp_path: Path) -> None:
    """Centers move by center_lr x d(center loss)/d(centers), whatever center_weight is (strong baseline)."""
    updates = []
    for weight in (5e-4, 5e-2):
        config = tiny_config("ctl", max_epochs=1, limit_train_batches=1)
        config.objective.center_weight = weight
        config.optimizer.lr = 0.0  # freeze the network so that the batch's features can be recomputed

        class KeepBatch(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                self.batch = batch
                self.centers = pl_module.objective.center_loss.centers.detach().clone()
                self.state = {k: v.clone() for k, v in pl_module.model.state_dict().items()}

        keep = KeepBatch()
        result = train(
            config, tmp_path / f"w{weight}", splits=stripes_splits, enable_progress_bar=False, callbacks=[keep]
        )
        module = RetrievalModule(config, num_classes=stripes_splits.num_train_classes)
        module.model.load_state_dict(keep.state)
        module.train()
        images, labels, _, _ = keep.batch
        centers = keep.centers.clone().requires_grad_(True)
        module.objective.center_loss.centers = torch.nn.Parameter(centers)
        raw = module.model(images)["raw"].detach()
        module.objective.center_loss(raw, labels).backward()
        expected = keep.centers - config.optimizer.center_lr * module.objective.center_loss.centers.grad
        trained = torch.load(result.checkpoint, weights_only=False)["state_dict"]["objective.center_loss.centers"]
        torch.testing.assert_close(trained, expected, rtol=1e-4, atol=1e-6)
        updates.append(trained - keep.centers)
    torch.testing.assert_close(updates[0], updates[1], rtol=1e-4, atol=1e-6)


KILLED_RUN = """
import os, sys
import lightning as L
from centrum.training import load_config, train

class ExitAtStep(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == int(sys.argv[3]):
            os._exit(17)  # a hard kill: no clean-up, no final checkpoint

train(load_config(sys.argv[1]), sys.argv[2], enable_progress_bar=False, callbacks=[ExitAtStep()])
"""


@pytest.mark.slow
def test_run_killed_mid_epoch_resumes_and_finishes(stripes_csv: Path, tiny_config, tmp_path: Path) -> None:
    config = tiny_config("ctl", max_epochs=2, checkpoint_every_n_steps=2)
    config.data.root = str(stripes_csv)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(config.to_yaml())
    run_dir = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(config_path), str(run_dir), "3"], capture_output=True, text=True
    )
    assert killed.returncode == 17, killed.stderr[-2000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 2  # the mid-epoch checkpoint before the kill

    with pytest.raises(ValueError, match="resume that run"):
        train(config, run_dir, enable_progress_bar=False)

    class FirstStep(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.first_step = trainer.global_step

    first = FirstStep()
    result = train(config, run_dir, resume=True, enable_progress_bar=False, callbacks=[first])
    assert first.first_step == 2  # continued from the checkpoint, not from scratch
    final = torch.load(result.checkpoint, weights_only=False)
    assert final["epoch"] == config.trainer.max_epochs
    # the log keeps the steps before the interruption and continues after it, each step once
    with (run_dir / "metrics.csv").open() as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss_step")]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
    assert steps[0] == 0 and steps[-1] == final["global_step"] - 1
    assert result.metrics["products"]["num_valid_queries"] > 0


def test_corrupt_image_is_skipped_and_reported_at_the_end(stripes_csv: Path, tiny_config, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "data"
    shutil.copytree(stripes_csv.parent, root)
    broken = root / "train" / "0003.png"
    broken.write_bytes(b"not a png")
    config = tiny_config("ctl", max_epochs=1)
    config.data.root = str(root / stripes_csv.name)
    config.data.on_error = "skip"
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\)"):
        result = train(config, tmp_path / "run", enable_progress_bar=False)
    assert json.loads((result.run_dir / "results.json").read_text())["skipped_images"] == [str(broken)]

    config.data.on_error = "raise"
    with pytest.raises(ValueError, match=r"0003\.png"):
        train(config, tmp_path / "run2", enable_progress_bar=False)
