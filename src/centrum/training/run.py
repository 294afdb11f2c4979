"""Running an experiment: a run folder, the Lightning trainer, evaluation during training, resume, seeds.

A run folder holds ``config.yaml``, ``checkpoints/last.ckpt`` (written every
``trainer.checkpoint_every_n_steps`` steps and at every epoch end, so an interrupted run loses little),
``metrics.csv``, TensorBoard logs under ``tensorboard/`` (when tensorboard is installed), the final
``model.ckpt`` and ``results.json`` with the final metrics.

Model selection never uses the test split: the model kept is the one at the end of training. The
query/gallery metrics logged during training are for watching, never for choosing a checkpoint.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger

from centrum.data import DatasetSplits
from centrum.inference import DEFAULT_PROTOCOLS, evaluate_model
from centrum.training.config import ExperimentConfig, config_from_dict
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
        dm = self.datamodule
        metrics, _, _ = evaluate_model(
            pl_module.model,
            dm.splits,
            dm.eval_dataloader(dm.splits.query),
            None if dm.splits.gallery is dm.splits.query else dm.eval_dataloader(dm.splits.gallery),
            self.protocols,
            pl_module.device,
            self.metric,
            self.recall_ks,
            self.distractor_labels,
        )
        self.history.append((epoch, metrics))
        for key, value in flatten_metrics(metrics).items():
            pl_module.log(f"eval/{key}", value, rank_zero_only=True)


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


def _set_metrics_aside(run_dir: Path) -> Path | None:
    """Lightning's CSV logger deletes an existing metrics.csv: keep the interrupted run's rows aside."""
    metrics = run_dir / "metrics.csv"
    if not metrics.exists():
        return None
    aside = run_dir / "metrics.before-resume.csv"
    metrics.replace(aside)
    return aside


def _merge_metrics(before: Path, metrics: Path) -> None:
    """Prepend the rows logged before the resume point (steps below the resumed run's first step)."""
    with before.open(newline="") as f:
        old = list(csv.DictReader(f))
    new: list[dict] = []
    if metrics.exists():
        with metrics.open(newline="") as f:
            new = list(csv.DictReader(f))
    first_new_step = min((int(r["step"]) for r in new if r.get("step")), default=None)
    kept = [r for r in old if first_new_step is None or (r.get("step") and int(r["step"]) < first_new_step)]
    fields = list(dict.fromkeys([k for r in kept + new for k in r]))
    with metrics.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept + new)
    before.unlink()


def _check_resume(run_dir: Path, config: ExperimentConfig, resume: bool) -> Path | None:
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.exists():
        return None
    if not resume:
        raise ValueError(
            f"run folder {run_dir} already holds a checkpoint ({last}); pass --resume to continue that run "
            "or --out to start a new one"
        )
    saved_file = run_dir / "config.yaml"
    if saved_file.exists():
        import yaml

        saved = config_from_dict(yaml.safe_load(saved_file.read_text()))
        if replace(saved, trainer=config.trainer) != config:
            raise ValueError(
                f"cannot resume {run_dir}: its config.yaml differs from the config given (only trainer.* may change)"
            )
    return last


def train(
    config: ExperimentConfig,
    run_dir: str | Path,
    resume: bool = False,
    splits: DatasetSplits | None = None,
    enable_progress_bar: bool = True,
    callbacks: list[Callback] | None = None,
) -> RunResult:
    """Train ``config`` into ``run_dir`` (resuming from its ``last.ckpt`` when ``resume``), then evaluate.

    Returns the final metrics of the dataset's protocols (per-image and centroids) on the test split.
    """
    run_dir = Path(run_dir)
    ckpt_path = _check_resume(run_dir, config, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_before = _set_metrics_aside(run_dir) if ckpt_path else None
    (run_dir / "metrics.csv").unlink(missing_ok=True)  # a fresh run starts a fresh log
    (run_dir / "config.yaml").write_text(config.to_yaml())
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
    tcfg = config.trainer
    precision = tcfg.precision
    if precision.startswith("16") and tcfg.accelerator in ("auto", "gpu", "cuda") and not torch.cuda.is_available():
        warnings.warn(
            f"trainer.precision={precision} needs a GPU and none is visible: training in 32-true", stacklevel=2
        )
        precision = "32-true"
    checkpoint_dir = run_dir / "checkpoints"
    trainer = L.Trainer(
        default_root_dir=str(run_dir),
        max_epochs=tcfg.max_epochs,
        accelerator=tcfg.accelerator,
        devices=tcfg.devices,
        strategy=tcfg.strategy,
        precision=precision,
        log_every_n_steps=tcfg.log_every_n_steps,
        limit_train_batches=tcfg.limit_train_batches,
        logger=_loggers(run_dir),
        callbacks=[
            ModelCheckpoint(
                dirpath=checkpoint_dir, save_last=True, save_top_k=0, every_n_train_steps=tcfg.checkpoint_every_n_steps
            ),
            ModelCheckpoint(dirpath=checkpoint_dir, save_last=True, save_top_k=0, every_n_epochs=1),
            evaluator,
            *(callbacks or []),
        ],
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # the P x M sampler splits classes across ranks itself
        enable_model_summary=False,
        enable_progress_bar=enable_progress_bar,
        deterministic="warn" if torch.cuda.is_available() else True,
    )
    with warnings.catch_warnings():
        # checkpoints hold the weights after the step they are named after, which is what we want
        warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
        warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
        warnings.filterwarnings("ignore", message=".*LeafSpec.* is deprecated")  # inside Lightning itself
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    if metrics_before is not None and trainer.is_global_zero:
        _merge_metrics(metrics_before, run_dir / "metrics.csv")

    final = run_dir / "model.ckpt"
    trainer.save_checkpoint(final)
    metrics = evaluator.history[-1][1] if evaluator.history else {}
    skipped = datamodule.skipped_paths()
    if skipped:
        shown = "\n  ".join(skipped[:20]) + (f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else "")
        warnings.warn(f"skipped {len(skipped)} unreadable image(s) (data.on_error=skip):\n  {shown}", stacklevel=2)
    if trainer.is_global_zero:
        summary = {"config": config.name, "seed": config.seed, "metrics": metrics, "skipped_images": skipped}
        (run_dir / "results.json").write_text(json.dumps(summary, indent=2, default=float))
    return RunResult(
        run_dir=run_dir, metrics=metrics, checkpoint=final, history=evaluator.history, model=module.model.eval()
    )


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


def train_runs(config: ExperimentConfig, out_dir: str | Path, runs: int = 1, resume: bool = False) -> list[RunResult]:
    """Train ``config`` ``runs`` times with seeds ``seed, seed+1, ...`` into ``out_dir/seed-<s>``.

    Writes ``summary.json`` with the mean and spread of every metric over the runs.
    """
    if runs < 1:
        raise ValueError(f"--runs must be at least 1, got {runs}")
    out_dir = Path(out_dir)
    if runs == 1:
        return [train(config, out_dir, resume=resume)]
    results = [
        train(replace(config, seed=config.seed + i), out_dir / f"seed-{config.seed + i}", resume=resume)
        for i in range(runs)
    ]
    summary = summarize_runs([r.metrics for r in results])
    (out_dir / "summary.json").write_text(
        json.dumps({p: {m: {"mean": v[0], "std": v[1]} for m, v in ms.items()} for p, ms in summary.items()}, indent=2)
    )
    return results
