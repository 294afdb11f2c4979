"""Running an experiment: a run folder, the Lightning trainer, resume, repeated seeds.

A run folder holds ``config.yaml``, ``checkpoints/last.ckpt`` (the newest state, written by one writer every
``trainer.checkpoint_every_n_steps`` steps and at every epoch end, so an interrupted run loses little),
``metrics.csv``, TensorBoard logs under ``tensorboard/`` (when tensorboard is installed), the final
``model.ckpt``, ``results.json`` with the final metrics and ``curves.png`` with the training curves.

Resume is exact: the checkpoint holds, besides the weights and optimiser state, the P x M sampler's position
(epoch, batches done) and the random state, and every training image's augmentation is drawn from a seed of
its own, so a run killed at any point and resumed ends with the weights and metrics of the run that was never
interrupted (same seed, CPU, deterministic settings). Every file of the run folder is replaced atomically.

Nothing is created before the inputs are checked: the config, the resume (:mod:`~centrum.training.resume`),
the device, the data's root and whether its classes fill a batch (:mod:`~centrum.training.preflight`). A full
disk stops the run with a message naming the run folder; the last checkpoint stays intact.

Model selection never uses the test split: the model kept is the one at the end of training. The
query/gallery metrics logged during training are for watching, never for choosing a checkpoint.

The parts live in focused modules; their names stay importable from here: the callbacks
(:mod:`~centrum.training.callbacks`), resume (:mod:`~centrum.training.resume`), results and summaries
(:mod:`~centrum.training.results`), checkpoint writing (:mod:`~centrum.training.checkpoint`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger

from centrum.data import DatasetSplits
from centrum.inference import DEFAULT_PROTOCOLS
from centrum.io import atomic_write_json, atomic_write_text
from centrum.rng import preserved_rng
from centrum.training.callbacks import (
    EpochClock,
    EpochLines,
    EvaluateDuringTraining,
    RunCheckpoint,
    flatten_metrics,
    main_figures,
)
from centrum.training.checkpoint import (
    RunFolderCheckpointIO,
    disk_full_message,
    is_disk_full,
    save_checkpoint_atomically,
)
from centrum.training.collapse import EmbeddingSpreadMonitor
from centrum.training.config import ExperimentConfig
from centrum.training.datamodule import RetrievalDataModule
from centrum.training.module import RetrievalModule
from centrum.training.preflight import check_accelerator, check_batches, check_data_root
from centrum.training.results import RunResult, finite, format_results_table, summarize_runs, write_curves
from centrum.training.resume import (
    METRICS_ASIDE,
    check_resume,
    checkpoint_classes,
    config_differences,
    merge_metrics,
    set_metrics_aside,
)

__all__ = [
    "METRICS_ASIDE",
    "PROGRESS_MODES",
    "EpochClock",
    "EpochLines",
    "EvaluateDuringTraining",
    "RunCheckpoint",
    "RunResult",
    "build_datamodule",
    "config_differences",
    "flatten_metrics",
    "format_results_table",
    "main_figures",
    "save_checkpoint_atomically",
    "summarize_runs",
    "train",
    "train_runs",
]


def build_datamodule(config: ExperimentConfig, splits: DatasetSplits | None = None) -> RetrievalDataModule:
    """The data module of ``config.data`` (``splits`` short-circuits reading the dataset)."""
    return RetrievalDataModule(**vars(config.data), seed=config.seed, splits=splits)


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


@contextlib.contextmanager
def _disk_full_named(run_dir: Path) -> Iterator[None]:
    """A full disk while the run writes becomes a ``ValueError`` that names the run folder."""
    try:
        yield
    except Exception as exc:
        if is_disk_full(exc):
            raise ValueError(disk_full_message(run_dir)) from exc
        raise


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
    when ``enable_progress_bar`` is false.

    Raises ``ValueError`` (``FileNotFoundError`` for a missing ``data.root``) before anything is created when
    ``resume`` finds no run, when the run's config differs (naming the fields), when ``trainer.max_epochs`` is
    below the epochs the run has trained, when ``data.root`` is unset or missing, or when the training classes
    cannot fill a P x M batch; and ``ValueError`` naming the run folder when its disk fills up, or when
    training made no step (e.g. every image was skipped).
    """
    run_dir = Path(run_dir)
    mode = _progress_mode(progress, enable_progress_bar)
    tcfg = config.trainer
    check_accelerator(tcfg.accelerator)
    resuming = check_resume(run_dir, config, resume)  # reads only: a refused resume leaves the run as it was
    if splits is None:
        check_data_root(config.data)
    datamodule = build_datamodule(config, splits)
    check_batches(datamodule)  # reads the dataset, so that bad data stops before the run folder exists
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise ValueError(disk_full_message(run_dir.parent)) from exc
        raise ValueError(f"cannot create the run folder {run_dir}: {exc.strerror or exc}") from exc
    if not os.access(run_dir, os.W_OK):
        raise ValueError(f"cannot write into the run folder {run_dir}: it is not writable")
    with _disk_full_named(run_dir):
        return _fit_and_evaluate(config, run_dir, datamodule, resuming, mode, callbacks)


def _fit_and_evaluate(
    config: ExperimentConfig,
    run_dir: Path,
    datamodule: RetrievalDataModule,
    resuming: tuple[Path, int] | None,
    mode: str,
    callbacks: list[Callback] | None,
) -> RunResult:
    """The part of :func:`train` that writes into the (checked, existing) run folder."""
    tcfg = config.trainer
    ckpt_path = None
    if resuming is not None:
        ckpt_path, resume_step = resuming
        set_metrics_aside(run_dir, resume_step)
    else:
        (run_dir / METRICS_ASIDE).unlink(missing_ok=True)
        (run_dir / "metrics.csv").unlink(missing_ok=True)  # a fresh run starts a fresh log
    atomic_write_text(run_dir / "config.yaml", config.to_yaml())
    L.seed_everything(config.seed, workers=True, verbose=False)

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
            f"trainer.precision={precision} needs a GPU and none is visible: training in 32-true", stacklevel=3
        )
        precision = "32-true"
    writer = RunCheckpoint(run_dir / "checkpoints" / "last.ckpt", tcfg.checkpoint_every_n_steps, datamodule)
    # the evaluator runs before the module's epoch end (the lr step) and the writer after both
    extra: list[Callback] = [EpochLines()] if mode == "plain" else []
    if mode == "bar":  # the bar reads the logged values (a device sync) only as often as the logs are written
        extra.append(TQDMProgressBar(refresh_rate=max(1, tcfg.log_every_n_steps)))
    monitored = any(isinstance(c, EmbeddingSpreadMonitor) for c in callbacks or [])
    if tcfg.spread_check_images and not monitored:  # warns when the embeddings collapse
        extra.append(EmbeddingSpreadMonitor(num_images=tcfg.spread_check_images, seed=config.seed))
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
            plugins=[RunFolderCheckpointIO()],  # temporary checkpoint files stay inside the run folder
            limit_val_batches=0,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,  # the P x M sampler splits classes across ranks itself
            enable_model_summary=False,
            enable_progress_bar=mode == "bar",
            deterministic="warn" if torch.cuda.is_available() else True,
        )
        with torch.serialization.safe_globals(checkpoint_classes()):
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
        merge_metrics(run_dir)

    max_epochs = tcfg.max_epochs
    if trainer.is_global_zero and (not evaluator.history or evaluator.history[-1][0] != max_epochs):
        # the final evaluation did not complete (interrupted or failed): run it now, on the final weights
        with _quiet_lightning(), preserved_rng():
            metrics = evaluator.evaluate(module.model, module.device, max_epochs)
        if mode == "plain":
            print(f"  evaluation: {main_figures(metrics)}", flush=True)
    final = run_dir / "model.ckpt"
    save_checkpoint_atomically(trainer, final)
    metrics = evaluator.history[-1][1] if evaluator.history else {}
    skipped = datamodule.skipped_paths()
    if skipped:
        shown = "\n  ".join(skipped[:20]) + (f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else "")
        warnings.warn(f"skipped {len(skipped)} unreadable image(s) (data.on_error=skip):\n  {shown}", stacklevel=3)
    gallery_classes = int(np.unique(np.asarray(datamodule.splits.gallery.labels)).size)
    if trainer.is_global_zero:
        summary = {
            "config": config.name,
            "seed": config.seed,
            "metrics": metrics,
            "skipped_images": skipped,
            "gallery_classes": gallery_classes,
        }
        atomic_write_json(run_dir / "results.json", finite(summary))
        write_curves(run_dir)
    return RunResult(
        run_dir=run_dir,
        metrics=metrics,
        checkpoint=final,
        history=evaluator.history,
        model=module.model.eval(),
        gallery_classes=gallery_classes,
    )


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
        finite({p: {m: {"mean": v[0], "std": v[1]} for m, v in ms.items()} for p, ms in summary.items()}),
    )
    return results
