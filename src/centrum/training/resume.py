"""Resuming a run: the checks that make a resume honest, and the metrics rows kept across interruptions.

A resume continues the run in its folder from ``checkpoints/last.ckpt``. It is refused, before anything in
the folder changes, when there is no run, when the config given differs from the run's ``config.yaml``
outside ``trainer.*``, when the checkpoint is unreadable, unsafe or foreign, and when
``trainer.max_epochs`` is below the epochs the run has already trained (the weights cannot be un-trained, and
rewriting the record to say fewer epochs would be false). More epochs extend the run.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from centrum.io import atomic_write_text, safe_torch_load
from centrum.training.config import ExperimentConfig, config_from_dict, yaml_load

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


def set_metrics_aside(run_dir: Path, resume_step: int) -> None:
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


def merge_metrics(run_dir: Path) -> None:
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


def checkpoint_classes() -> list[Any]:
    """Classes besides tensors and plain data that a Lightning checkpoint of ours holds (allow-listed)."""
    from lightning.fabric.utilities.data import AttributeDict

    return [AttributeDict]


def load_resume_checkpoint(path: Path) -> dict[str, Any]:
    """Read the checkpoint to resume from safely (``weights_only``); check that it is one of ours."""
    try:
        checkpoint = safe_torch_load(path, what="checkpoint", allowed=checkpoint_classes)
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


def trained_position(checkpoint: dict[str, Any]) -> tuple[int, int]:
    """(epochs completed, batches of the next epoch done) in a checkpoint written by the run's writer."""
    epoch, done = checkpoint["callbacks"]["RunCheckpoint"]["position"]
    return int(epoch), int(done)


def check_epochs(run_dir: Path, config: ExperimentConfig, checkpoint: dict[str, Any]) -> None:
    """Refuse a resume whose ``trainer.max_epochs`` is below what the checkpoint has already trained."""
    epochs, batches = trained_position(checkpoint)
    reached = epochs + (1 if batches else 0)
    wanted = config.trainer.max_epochs
    if wanted >= reached:
        return
    trained = f"{epochs} epoch(s)" + (f" and {batches} batch(es) of epoch {epochs + 1}" if batches else "")
    raise ValueError(
        f"cannot resume {run_dir} with trainer.max_epochs={wanted}: the run has trained {trained}, more than "
        f"{wanted} epoch(s), and trained weights cannot be undone; the run is left as it was (resume with "
        f"trainer.max_epochs >= {reached}, or train {wanted} epoch(s) into another folder)"
    )


def check_resume(run_dir: Path, config: ExperimentConfig, resume: bool) -> tuple[Path, int] | None:
    """The checkpoint to resume from and its global step (``None`` for a fresh run), or a ``ValueError`` saying
    why the run folder cannot be used as asked. Reads only: nothing in ``run_dir`` changes."""
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
            f"run folder {run_dir} already holds a checkpoint ({last}); resume that run or train into another folder"
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
    checkpoint = load_resume_checkpoint(last)
    check_epochs(run_dir, config, checkpoint)
    return last, int(checkpoint.get("global_step", 0))
