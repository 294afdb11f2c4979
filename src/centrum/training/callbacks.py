"""The Lightning callbacks of a run: evaluation during training, the one checkpoint writer, the epoch lines.

- :class:`EvaluateDuringTraining` evaluates on the query/gallery splits every few epochs and after the last;
- :class:`RunCheckpoint` writes ``checkpoints/last.ckpt`` with the sampler's position, the random state and
  the time spent in the current epoch, so that a resumed run continues exactly (and reports honest times);
- :class:`EpochLines` prints one plain line per epoch and per evaluation.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint

from centrum.inference import evaluate_model
from centrum.rng import preserved_rng
from centrum.training.checkpoint import save_checkpoint_atomically
from centrum.training.datamodule import RetrievalDataModule


def flatten_metrics(metrics: dict[str, dict]) -> dict[str, float]:
    """``{protocol: {metric: value}}`` -> ``{"protocol/metric": value}`` for scalar values only."""
    return {
        f"{protocol}/{name}": float(value)
        for protocol, values in metrics.items()
        for name, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


class EvaluateDuringTraining(Callback):
    """Evaluates the model on the query/gallery splits every ``every`` epochs (0: never during training) and
    always after the last one.

    Runs on the global-zero process only (the evaluation functions are exact and chunked, so one
    process suffices); metrics are logged as ``eval/<protocol>/<metric>`` and kept in :attr:`history`.
    """

    def __init__(
        self,
        datamodule: RetrievalDataModule,
        protocols: tuple[str, ...],
        metric: str,
        every: int,
        recall_ks: tuple[int, ...] = (),
        distractor_labels: tuple[int, ...] = (),
    ) -> None:
        self.datamodule = datamodule
        self.protocols = protocols
        self.metric = metric
        self.every = every
        self.recall_ks = recall_ks
        self.distractor_labels = distractor_labels
        self.history: list[tuple[int, dict[str, dict]]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        last = epoch >= (trainer.max_epochs or epoch)
        periodic = self.every > 0 and epoch % self.every == 0
        if not trainer.is_global_zero or not (periodic or last):
            return
        with preserved_rng():  # evaluating must not move the random streams training draws from next
            metrics = self.evaluate(pl_module.model, pl_module.device, epoch)
        for key, value in flatten_metrics(metrics).items():
            pl_module.log(f"eval/{key}", value, rank_zero_only=True)

    def evaluate(self, model: torch.nn.Module, device: torch.device, epoch: int) -> dict[str, dict]:
        """Evaluate ``model`` on the query/gallery splits, record the metrics as those of ``epoch``, return them."""
        dm = self.datamodule
        metrics, _, _ = evaluate_model(
            model,
            dm.splits,
            dm.eval_dataloader(dm.splits.query),
            None if dm.splits.gallery is dm.splits.query else dm.eval_dataloader(dm.splits.gallery),
            self.protocols,
            device,
            self.metric,
            self.recall_ks,
            self.distractor_labels,
        )
        metrics = _plain_data(metrics)
        self.history = [h for h in self.history if h[0] != epoch] + [(epoch, metrics)]
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """The evaluations so far, kept in the checkpoint so that a resumed run reports all of them."""
        return {"history": [[epoch, metrics] for epoch, metrics in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the evaluations of the interrupted run."""
        self.history = [(int(epoch), metrics) for epoch, metrics in state_dict.get("history", [])]


def _plain_data(value: Any) -> Any:
    """Metrics as plain Python data (NumPy scalars become floats), loadable with ``weights_only=True``."""
    return json.loads(json.dumps(value, default=float))


def _rng_state() -> dict[str, Any]:
    """The global random states (torch CPU, NumPy, Python) as tensors and plain data."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_plain_data, np_state[2:])],
        "python": _plain_data(random.getstate()),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class EpochClock:
    """Seconds spent in the current epoch, across an interruption.

    A resumed epoch starts in this process part-way through (Lightning calls no epoch-start hook for it), so
    the clock starts when training starts and adds the seconds the interrupted process had spent in that
    epoch up to its last checkpoint (time after that checkpoint was lost with the process and is not counted;
    the batches it covered are trained again and counted here).
    """

    def __init__(self) -> None:
        self._start = time.monotonic()
        self.before = 0.0  # seconds of the current epoch spent before the interruption
        self.resumed_epoch: int | None = None  # 0-based epoch that this process resumed part-way through

    def start_training(self) -> None:
        """Training (fresh or resumed) starts now."""
        self._start = time.monotonic()

    def start_epoch(self, epoch: int) -> None:
        """Epoch ``epoch`` (0-based) starts now, unless it is the one being resumed."""
        if epoch != self.resumed_epoch:
            self._start, self.before, self.resumed_epoch = time.monotonic(), 0.0, None

    def resume(self, epoch: int, seconds_before: float) -> None:
        """This process continues epoch ``epoch`` (0-based), on which ``seconds_before`` were spent already."""
        self.resumed_epoch, self.before = int(epoch), max(float(seconds_before), 0.0)

    @property
    def resumed(self) -> bool:
        """Whether the current epoch was resumed after an interruption."""
        return self.resumed_epoch is not None

    def here(self) -> float:
        """Seconds of the current epoch spent in this process."""
        return time.monotonic() - self._start

    def seconds(self) -> float:
        """Seconds of the current epoch in all, before and after an interruption."""
        return self.before + self.here()


class RunCheckpoint(Checkpoint):
    """The run's one checkpoint writer: ``checkpoints/last.ckpt`` is always the newest state.

    Writes every ``every_n_steps`` optimiser steps within an epoch and at every epoch end (after the
    evaluation and the learning-rate step, so that a checkpoint never falls between the last batch of an
    epoch and its end-of-epoch work). Each write replaces the file atomically (a temporary file in the same
    folder, then a rename), after flushing the loggers so that the metrics rows up to the checkpoint are on
    disk. Besides Lightning's state, the checkpoint holds the sampler's position, the random state and the
    seconds spent in the current epoch, restored on resume.
    """

    def __init__(self, path: Path, every_n_steps: int, datamodule: RetrievalDataModule) -> None:
        self.path = Path(path)
        self.every_n_steps = int(every_n_steps)
        self.datamodule = datamodule
        self.position = (0, 0)  # (epoch, batches of it done) of the state being saved
        self.writes = 0
        self.clock = EpochClock()

    @property
    def state_key(self) -> str:
        return "RunCheckpoint"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.clock.start_training()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.clock.start_epoch(trainer.current_epoch)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.every_n_steps <= 0 or trainer.global_step == 0 or trainer.global_step % self.every_n_steps:
            return
        if batch_idx + 1 >= trainer.num_training_batches:  # the epoch-end write follows
            return
        self.save(trainer, (trainer.current_epoch, batch_idx + 1))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer, (trainer.current_epoch + 1, 0))

    def save(self, trainer: L.Trainer, position: tuple[int, int]) -> None:
        """Write the trainer's state at ``position`` to :attr:`path`, atomically."""
        self.position = position
        for logger in trainer.loggers:
            logger.save()
        save_checkpoint_atomically(trainer, self.path)
        self.writes += 1

    def state_dict(self) -> dict[str, Any]:
        """The sampler's position, the random state and the seconds of the epoch so far, at the write."""
        mid_epoch = self.position[1] > 0
        return {
            "position": list(self.position),
            "rng": _rng_state(),
            "epoch_seconds": self.clock.seconds() if mid_epoch else 0.0,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Put the sampler where the interrupted run was and restore the random state."""
        epoch, done = state_dict["position"]
        self.position = (int(epoch), int(done))
        self.datamodule.resume_at(int(epoch), int(done))
        _set_rng_state(state_dict["rng"])
        if int(done) > 0:  # checkpoints of older versions carry no seconds: the line then counts this process's
            self.clock.resume(int(epoch), float(state_dict.get("epoch_seconds", 0.0)))


class EpochLines(Callback):
    """Prints one plain line per epoch (and per evaluation) with the main figures: for logs, files and CI.

    The time is the epoch's own: for an epoch resumed after an interruption, the seconds this process spent
    on it plus those spent before the interruption (up to the last checkpoint), and the line says so.
    """

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream
        self._own = EpochClock()  # used when the trainer has no RunCheckpoint

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._own.start_training()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._own.start_epoch(trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        # the module's running sums (its own epoch end, which logs and resets them, comes after this hook)
        sums, images = getattr(pl_module, "epoch_sums", {}), max(getattr(pl_module, "epoch_images", 0), 1)
        for name in ("loss", "synthetic_ratio"):
            if name in sums:
                parts.append(f"{name} {sums[name] / images:.4g}")
        optimizers = trainer.optimizers
        if optimizers:
            parts.append(f"lr {optimizers[0].param_groups[0]['lr']:.3g}")
        writer = next((c for c in trainer.callbacks if isinstance(c, RunCheckpoint)), None)
        clock = writer.clock if writer is not None else self._own
        timing = f"{clock.seconds():.1f} s"
        if clock.resumed:
            timing += f" (resumed: {clock.before:.1f} s before the interruption)"
        parts.append(timing)
        print("  ".join(parts), file=self.stream or sys.stdout, flush=True)
        evaluator = next((c for c in trainer.callbacks if isinstance(c, EvaluateDuringTraining)), None)
        if evaluator and evaluator.history and evaluator.history[-1][0] == trainer.current_epoch + 1:
            figures = main_figures(evaluator.history[-1][1])
            print(f"  evaluation: {figures}", file=self.stream or sys.stdout, flush=True)


def main_figures(metrics: dict[str, dict]) -> str:
    """The headline metrics of an evaluation on one line: ``products mAP 0.5123, products Acc@1 0.6000``."""
    shown = ("mAP", "Acc@1", "R@1", "Recall@1", "rank-1", "NMI", "MAP@R")
    parts = [
        f"{protocol} {name} {float(values[name]):.4f}"
        for protocol, values in metrics.items()
        for name in shown
        if isinstance(values.get(name), int | float) and not isinstance(values.get(name), bool)
    ]
    return ", ".join(parts) or "(no scalar metrics)"
