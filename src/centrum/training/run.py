"""Running an experiment: a run folder, the Lightning trainer, evaluation during training, resume, seeds.

A run folder holds ``config.yaml``, ``checkpoints/last.ckpt`` (the newest state, written by one writer every
``trainer.checkpoint_every_n_steps`` steps and at every epoch end, so an interrupted run loses little),
``metrics.csv``, TensorBoard logs under ``tensorboard/`` (when tensorboard is installed), the final
``model.ckpt``, ``results.json`` with the final metrics and ``curves.png`` with the training curves.

Resume is exact: the checkpoint holds, besides the weights and optimiser state, the P x M sampler's position
(epoch, batches done) and the random state, and every training image's augmentation is drawn from a seed of
its own, so a run killed at any point and resumed ends with the weights and metrics of the run that was never
interrupted (same seed, CPU, deterministic settings). Every file of the run folder is replaced atomically.

Model selection never uses the test split: the model kept is the one at the end of training. The
query/gallery metrics logged during training are for watching, never for choosing a checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import random
import statistics
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.loggers import CSVLogger, Logger

from centrum.data import DatasetSplits
from centrum.inference import DEFAULT_PROTOCOLS, evaluate_model
from centrum.io import atomic_write_json, atomic_write_text, safe_torch_load
from centrum.training.config import ExperimentConfig, config_from_dict, yaml_load
from centrum.training.datamodule import RetrievalDataModule
from centrum.training.module import RetrievalModule


def build_datamodule(config: ExperimentConfig, splits: DatasetSplits | None = None) -> RetrievalDataModule:
    """The data module of ``config.data`` (``splits`` short-circuits reading the dataset)."""
    return RetrievalDataModule(**vars(config.data), seed=config.seed, splits=splits)


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


class RunCheckpoint(Checkpoint):
    """The run's one checkpoint writer: ``checkpoints/last.ckpt`` is always the newest state.

    Writes every ``every_n_steps`` optimiser steps within an epoch and at every epoch end (after the
    evaluation and the learning-rate step, so that a checkpoint never falls between the last batch of an
    epoch and its end-of-epoch work). Each write replaces the file atomically (temporary file + rename),
    after flushing the loggers so that the metrics rows up to the checkpoint are on disk. Besides Lightning's
    state, the checkpoint holds the sampler's position and the random state, restored on resume.
    """

    def __init__(self, path: Path, every_n_steps: int, datamodule: RetrievalDataModule) -> None:
        self.path = Path(path)
        self.every_n_steps = int(every_n_steps)
        self.datamodule = datamodule
        self.position = (0, 0)  # (epoch, batches of it done) of the state being saved
        self.writes = 0

    @property
    def state_key(self) -> str:
        return "RunCheckpoint"

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
        """The sampler's position and the random state at the moment of the write."""
        return {"position": list(self.position), "rng": _rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Put the sampler where the interrupted run was and restore the random state."""
        epoch, done = state_dict["position"]
        self.position = (int(epoch), int(done))
        self.datamodule.resume_at(int(epoch), int(done))
        _set_rng_state(state_dict["rng"])


def save_checkpoint_atomically(trainer: L.Trainer, path: Path) -> None:
    """``trainer.save_checkpoint`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    trainer.save_checkpoint(tmp, weights_only=False)
    if trainer.is_global_zero:
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    trainer.strategy.barrier("centrum.save_checkpoint")


class EpochLines(Callback):
    """Prints one plain line per epoch (and per evaluation) with the main figures: for logs, files and CI."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()

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
        parts.append(f"{time.monotonic() - self._start:.1f} s")
        print("  ".join(parts), file=self.stream or sys.stdout, flush=True)
        evaluator = next((c for c in trainer.callbacks if isinstance(c, EvaluateDuringTraining)), None)
        if evaluator and evaluator.history and evaluator.history[-1][0] == trainer.current_epoch + 1:
            figures = _main_figures(evaluator.history[-1][1])
            print(f"  evaluation: {figures}", file=self.stream or sys.stdout, flush=True)


def _main_figures(metrics: dict[str, dict]) -> str:
    shown = ("mAP", "Acc@1", "R@1", "Recall@1", "rank-1", "NMI", "MAP@R")
    parts = [
        f"{protocol} {name} {float(values[name]):.4f}"
        for protocol, values in metrics.items()
        for name in shown
        if isinstance(values.get(name), int | float) and not isinstance(values.get(name), bool)
    ]
    return ", ".join(parts) or "(no scalar metrics)"


@dataclass
class RunResult:
    """What a finished run leaves: its folder, final metrics per protocol, the model checkpoint, the
    metrics of every evaluation during training, and the trained model itself (in eval mode)."""

    run_dir: Path
    metrics: dict[str, dict]
    checkpoint: Path
    history: list[tuple[int, dict[str, dict]]]
    model: torch.nn.Module


def _loggers(run_dir: Path) -> list[Logger]:
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="", version="")]
    try:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(
            TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
        )
    except ModuleNotFoundError:  # tensorboard is optional; metrics.csv always exists
        pass
    return loggers


METRICS_ASIDE = "metrics.before-resume.csv"


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _step(row: dict[str, str]) -> int | None:
    value = row.get("step")
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _rows_then(old: list[dict[str, str]], new: list[dict[str, str]]) -> list[dict[str, str]]:
    """``old``'s rows logged before ``new``'s first step, then ``new``'s: each step's rows from the latest run."""
    first_new = min((s for r in new if (s := _step(r)) is not None), default=None)
    kept = [r for r in old if first_new is None or ((s := _step(r)) is not None and s < first_new)]
    return kept + new


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _set_metrics_aside(run_dir: Path, resume_step: int) -> None:
    """Keep the rows of every earlier part of the run, up to the step the run resumes at, in ``METRICS_ASIDE``.

    Lightning's CSV logger starts a fresh ``metrics.csv``; the rows set aside by earlier resumes and those of
    the interrupted part are merged (each step's rows from the latest part) and written atomically before
    ``metrics.csv`` goes, so that no number of interruptions loses a row.
    """
    metrics, aside = run_dir / "metrics.csv", run_dir / METRICS_ASIDE
    rows = _rows_then(_read_rows(aside), _read_rows(metrics))
    rows = [r for r in rows if (s := _step(r)) is not None and s < resume_step]
    _write_rows(aside, rows)
    metrics.unlink(missing_ok=True)


def _merge_metrics(run_dir: Path) -> None:
    """Prepend the rows set aside before the resume point to the resumed part's ``metrics.csv``."""
    metrics, aside = run_dir / "metrics.csv", run_dir / METRICS_ASIDE
    if not aside.is_file():
        return
    _write_rows(metrics, _rows_then(_read_rows(aside), _read_rows(metrics)))
    aside.unlink()


def _flat_config(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat_config(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def config_differences(saved: ExperimentConfig, given: ExperimentConfig) -> list[str]:
    """Dotted names of the fields that differ between two configs (``data.p``, ``optimizer.lr``, ...)."""
    a, b = _flat_config(saved.to_dict()), _flat_config(given.to_dict())
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))


def _check_resume(run_dir: Path, config: ExperimentConfig, resume: bool) -> Path | None:
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.exists():
        if resume:
            raise ValueError(
                f"there is no run to resume in {run_dir} (no checkpoints/last.ckpt); "
                "start a new run there instead of resuming"
            )
        return None
    if not resume:
        raise ValueError(
            f"run folder {run_dir} already holds a checkpoint ({last}); resume that run "
            "or train into another folder"
        )
    saved_file = run_dir / "config.yaml"
    if saved_file.exists():
        import yaml

        try:
            saved = config_from_dict(yaml_load(saved_file.read_text()))
        except (ValueError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot resume {run_dir}: its config.yaml cannot be read ({exc})") from exc
        differing = [k for k in config_differences(saved, config) if not k.startswith("trainer.")]
        if differing:
            raise ValueError(
                f"cannot resume {run_dir}: the config given differs from the run's config.yaml in "
                f"{', '.join(differing)} (only trainer.* may change on resume)"
            )
    return last


def _checkpoint_classes() -> list[Any]:
    """Classes besides tensors and plain data that a Lightning checkpoint of ours holds (allow-listed)."""
    from lightning.fabric.utilities.data import AttributeDict

    return [AttributeDict]


def _load_resume_checkpoint(path: Path) -> dict[str, Any]:
    """Read the checkpoint to resume from safely (``weights_only``); check that it is one of ours."""
    try:
        checkpoint = safe_torch_load(path, what="checkpoint", allowed=_checkpoint_classes)
    except (ValueError, FileNotFoundError):
        raise
    except Exception as exc:  # a damaged file can fail deep in the unpickler in many ways
        raise ValueError(
            f"checkpoint {path} could not be read as a PyTorch file ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(checkpoint, dict) or "RunCheckpoint" not in checkpoint.get("callbacks", {}):
        raise ValueError(
            f"checkpoint {path} was not written by this version of `centrum train` (no sampler position); "
            "it cannot be resumed exactly: start a new run with --out"
        )
    return checkpoint


PROGRESS_MODES = ("auto", "bar", "plain", "none")


def _progress_mode(progress: str | None, enable_progress_bar: bool) -> str:
    if progress is None:
        progress = "auto" if enable_progress_bar else "none"
    if progress not in PROGRESS_MODES:
        raise ValueError(f"progress must be one of {', '.join(PROGRESS_MODES)}, got {progress!r}")
    if progress == "auto":
        return "bar" if sys.stderr.isatty() else "plain"
    return progress


#: Lightning warnings that say nothing a centrum user can act on
_QUIET_WARNINGS = (
    "Using ModelCheckpoint with manual optimization",
    "Experiment logs directory .* exists and is not empty",
    ".*LeafSpec.* is deprecated",
    "The '.*dataloader' does not have many workers",
    "The number of training batches .* is smaller than the logging interval",
    "You're resuming from a checkpoint that ended before the epoch ended",
    "Checkpoint directory .* exists and is not empty",
    ".*does not have many workers which may be a bottleneck.*",
    "Trying to infer the `batch_size` from an ambiguous collection",
)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's tips, hardware banners and warnings that mean nothing to the user."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message in _QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _check_accelerator(accelerator: str) -> None:
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


def train(
    config: ExperimentConfig,
    run_dir: str | Path,
    resume: bool = False,
    splits: DatasetSplits | None = None,
    enable_progress_bar: bool = True,
    callbacks: list[Callback] | None = None,
    progress: str | None = None,
) -> RunResult:
    """Train ``config`` into ``run_dir`` (resuming exactly from its ``last.ckpt`` when ``resume``), then evaluate.

    Returns the final metrics of the dataset's protocols (per-image and centroids) on the test split.
    ``progress`` is ``"bar"`` (a progress bar), ``"plain"`` (one line per epoch and per evaluation),
    ``"none"`` or ``"auto"`` (a bar on a terminal, else plain lines); by default ``"auto"``, or ``"none"``
    when ``enable_progress_bar`` is false. Raises ``ValueError`` when ``resume`` finds no run, when the run's
    config differs (naming the fields), and when training made no step (e.g. every image was skipped).
    """
    run_dir = Path(run_dir)
    mode = _progress_mode(progress, enable_progress_bar)
    tcfg = config.trainer
    _check_accelerator(tcfg.accelerator)
    ckpt_path = _check_resume(run_dir, config, resume)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the run folder {run_dir}: {exc.strerror or exc}") from exc
    if not os.access(run_dir, os.W_OK):
        raise ValueError(f"cannot write into the run folder {run_dir}: it is not writable")
    if ckpt_path is not None:
        resume_state = _load_resume_checkpoint(ckpt_path)
        _set_metrics_aside(run_dir, int(resume_state.get("global_step", 0)))
        del resume_state
    else:
        (run_dir / METRICS_ASIDE).unlink(missing_ok=True)
        (run_dir / "metrics.csv").unlink(missing_ok=True)  # a fresh run starts a fresh log
    atomic_write_text(run_dir / "config.yaml", config.to_yaml())
    L.seed_everything(config.seed, workers=True, verbose=False)

    datamodule = build_datamodule(config, splits)
    module = RetrievalModule(config, num_classes=datamodule.num_classes)
    protocols = tuple(config.evaluation.protocols) or DEFAULT_PROTOCOLS[datamodule.splits.protocol]
    evaluator = EvaluateDuringTraining(
        datamodule,
        protocols,
        config.evaluation.metric,
        config.trainer.eval_every,
        tuple(config.evaluation.recall_ks),
        tuple(config.evaluation.distractor_labels),
    )
    precision = tcfg.precision
    if precision.startswith("16") and tcfg.accelerator in ("auto", "gpu", "cuda") and not torch.cuda.is_available():
        warnings.warn(
            f"trainer.precision={precision} needs a GPU and none is visible: training in 32-true", stacklevel=2
        )
        precision = "32-true"
    writer = RunCheckpoint(run_dir / "checkpoints" / "last.ckpt", tcfg.checkpoint_every_n_steps, datamodule)
    # the evaluator runs before the module's epoch end (the lr step) and the writer after both
    extra: list[Callback] = [EpochLines()] if mode == "plain" else []
    with _quiet_lightning():
        trainer = L.Trainer(
            default_root_dir=str(run_dir),
            max_epochs=tcfg.max_epochs,
            accelerator=tcfg.accelerator,
            devices=tcfg.devices,
            num_nodes=tcfg.num_nodes,
            strategy=tcfg.strategy,
            precision=precision,
            log_every_n_steps=tcfg.log_every_n_steps,
            limit_train_batches=tcfg.limit_train_batches,
            logger=_loggers(run_dir),
            callbacks=[evaluator, writer, *extra, *(callbacks or [])],
            limit_val_batches=0,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,  # the P x M sampler splits classes across ranks itself
            enable_model_summary=False,
            enable_progress_bar=mode == "bar",
            deterministic="warn" if torch.cuda.is_available() else True,
        )
        with torch.serialization.safe_globals(_checkpoint_classes()):
            trainer.fit(
                module,
                datamodule=datamodule,
                ckpt_path=str(ckpt_path) if ckpt_path else None,
                weights_only=True if ckpt_path else None,
            )
    if trainer.global_step == 0:
        skipped = datamodule.skipped_paths()
        why = (
            f"all {len(skipped)} training images read were unreadable and skipped (data.on_error=skip)"
            if skipped
            else "no batch reached the optimiser (check data.p, data.m and trainer.limit_train_batches)"
        )
        raise ValueError(f"training made zero steps: {why}; nothing was learned, so no model is written")
    if trainer.is_global_zero:
        _merge_metrics(run_dir)

    max_epochs = tcfg.max_epochs
    if trainer.is_global_zero and (not evaluator.history or evaluator.history[-1][0] != max_epochs):
        # the final evaluation did not complete (interrupted or failed): run it now, on the final weights
        with _quiet_lightning():
            metrics = evaluator.evaluate(module.model, module.device, max_epochs)
        if mode == "plain":
            print(f"  evaluation: {_main_figures(metrics)}", flush=True)
    final = run_dir / "model.ckpt"
    save_checkpoint_atomically(trainer, final)
    metrics = evaluator.history[-1][1] if evaluator.history else {}
    skipped = datamodule.skipped_paths()
    if skipped:
        shown = "\n  ".join(skipped[:20]) + (f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else "")
        warnings.warn(f"skipped {len(skipped)} unreadable image(s) (data.on_error=skip):\n  {shown}", stacklevel=2)
    if trainer.is_global_zero:
        summary = {"config": config.name, "seed": config.seed, "metrics": metrics, "skipped_images": skipped}
        atomic_write_json(run_dir / "results.json", _finite(summary))
        _write_curves(run_dir)
    return RunResult(
        run_dir=run_dir, metrics=metrics, checkpoint=final, history=evaluator.history, model=module.model.eval()
    )


def _finite(value: Any) -> Any:
    """NaN/inf metrics (e.g. no valid query) as ``null``: results.json stays strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_curves(run_dir: Path) -> None:
    """``curves.png`` from ``metrics.csv``; a run whose log has nothing to draw simply has no picture."""
    from centrum.reports.plots import plot_training_curves

    with contextlib.suppress(ValueError, FileNotFoundError):
        plot_training_curves(run_dir / "metrics.csv", run_dir / "curves.png")


def summarize_runs(results: list[dict[str, dict]]) -> dict[str, dict[str, Any]]:
    """Mean and sample standard deviation over runs of every scalar metric: ``{protocol: {metric: (mean, std)}}``."""
    flat = [flatten_metrics(r) for r in results]
    summary: dict[str, dict[str, Any]] = {}
    for key in flat[0] if flat else []:
        values = [f[key] for f in flat if key in f and not math.isnan(f[key])]
        protocol, name = key.split("/", 1)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        summary.setdefault(protocol, {})[name] = (statistics.fmean(values), std)
    return summary


def train_runs(
    config: ExperimentConfig, out_dir: str | Path, runs: int = 1, resume: bool = False, progress: str | None = None
) -> list[RunResult]:
    """Train ``config`` ``runs`` times with seeds ``seed, seed+1, ...`` into ``out_dir/seed-<s>``.

    Writes ``summary.json`` with the mean and spread of every metric over the runs. With ``resume``, the
    seeds that had started resume and those that had not start (and say so).
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    out_dir = Path(out_dir)
    extra: dict[str, Any] = {} if progress is None else {"progress": progress}
    if runs == 1:
        return [train(config, out_dir, resume=resume, **extra)]
    seeds = [config.seed + i for i in range(runs)]
    started = [(out_dir / f"seed-{s}" / "checkpoints" / "last.ckpt").exists() for s in seeds]
    if resume and not any(started):
        raise ValueError(f"there is no run to resume in {out_dir} (no seed-*/checkpoints/last.ckpt)")
    results = []
    for seed, was_started in zip(seeds, started, strict=True):
        if resume and not was_started:
            print(f"seed {seed} had not started: training it from the beginning", flush=True)
        run_dir = out_dir / f"seed-{seed}"
        results.append(train(replace(config, seed=seed), run_dir, resume=resume and was_started, **extra))
    summary = summarize_runs([r.metrics for r in results])
    atomic_write_json(
        out_dir / "summary.json",
        _finite({p: {m: {"mean": v[0], "std": v[1]} for m, v in ms.items()} for p, ms in summary.items()}),
    )
    return results
