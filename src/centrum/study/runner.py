"""Running a study: every cell x seed through :func:`centrum.training.train`, resumable, optionally in parallel.

Runs live in ``OUT/runs/<cell key>/seed-<s>/``. A run with ``results.json`` is finished and skipped; a run with
``checkpoints/last.ckpt`` but no results was interrupted and resumes from that checkpoint; any other starts fresh.
Every arm gets the same code, data, seeds and schedule; the model kept is the one at the end of training.

Every run trains with the same number of intra-op threads (``threads``, default :data:`DEFAULT_THREADS`) whether
the study runs with ``--jobs 1`` or more: a CPU matrix product split over a different number of threads sums in a
different order, so before this runs of a ``--jobs 1`` and a ``--jobs 2`` study differed by up to 1.3e-4. With the
thread count fixed, a run's weights are the same bit for bit whichever ``--jobs`` trained it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from centrum.io import atomic_write_text
from centrum.study.spec import Cell, Study

#: intra-op threads of every run (serial or in a worker): fixed, so that results do not depend on ``--jobs``
DEFAULT_THREADS = 1


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the study: a cell, a seed and its folder."""

    cell: Cell
    seed: int
    run_dir: Path

    @property
    def finished(self) -> bool:
        """Whether the run left its final ``results.json``."""
        return (self.run_dir / "results.json").is_file()

    @property
    def interrupted(self) -> bool:
        """Whether the run started (a checkpoint exists) but did not finish."""
        return not self.finished and (self.run_dir / "checkpoints" / "last.ckpt").is_file()


def plan_runs(
    study: Study, out_dir: str | Path, seeds: list[int] | None = None, cells: list[Cell] | None = None
) -> list[PlannedRun]:
    """Every cell x seed of ``study`` (or of the given ``cells`` and ``seeds``) with its run folder under
    ``out_dir/runs``; shared cells are planned once."""
    runs, seen = [], set()
    for cell in study.cells() if cells is None else cells:
        for seed in study.seeds if seeds is None else seeds:
            run_dir = Path(out_dir) / "runs" / cell.key / f"seed-{seed}"
            if run_dir in seen:
                continue
            seen.add(run_dir)
            runs.append(PlannedRun(cell, seed, run_dir))
    return runs


def snapshot_epochs(study: Study, max_epochs: int) -> list[int]:
    """The epochs at which test embeddings are kept for t-SNE: the study's ``tsne.epochs`` (``last`` allowed),
    by default before training, half-way and at the end."""
    wanted = study.tsne.get("epochs", [0, "half", "last"])
    epochs = []
    for e in wanted:
        if e == "last":
            epochs.append(max_epochs)
        elif e == "half":
            epochs.append(max(1, max_epochs // 2))
        elif isinstance(e, int) and 0 <= e <= max_epochs:
            epochs.append(e)
        else:
            raise ValueError(f"tsne.epochs entries must be 0..{max_epochs}, 'half' or 'last', got {e!r}")
    return sorted(set(epochs))


def execute_run(study: Study, run: PlannedRun, threads: int | None = DEFAULT_THREADS) -> float:
    """Train one planned run (resuming it when interrupted) with the study's callbacks and ``threads`` intra-op
    threads (None: leave torch's setting); returns its seconds."""
    import torch

    from centrum.study.callbacks import EmbeddingSnapshots, FinalState, StepCost
    from centrum.training import train

    previous = torch.get_num_threads()
    config = study.config(run.cell, run.seed)
    callbacks = [StepCost(run.run_dir), FinalState(run.run_dir)]
    if {"tsne", "ranked_lists"} & set(study.analyses):
        callbacks.append(
            EmbeddingSnapshots(
                run.run_dir,
                snapshot_epochs(study, config.trainer.max_epochs),
                classes=int(study.tsne.get("classes", 8)),
                per_class=int(study.tsne.get("per_class", 20)),
            )
        )
    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    try:
        train(config, run.run_dir, resume=run.interrupted, enable_progress_bar=False, callbacks=callbacks)
    except (ValueError, FileNotFoundError) as exc:  # a bad cell: say which one, in the CLI's one line
        raise type(exc)(f"study {study.name!r}, cell {run.cell.label!r}, seed {run.seed}: {exc}") from exc
    finally:
        torch.set_num_threads(previous)
    return time.perf_counter() - start


_WATCHING_PARENT = False


def exit_with_parent(parent: int, interval: float = 2.0) -> None:
    """In a worker process: exit as soon as its parent process ``parent`` (the pid the study passed down, so
    that a parent killed before the worker got here still counts) is gone, even killed with SIGKILL, instead
    of training on as an orphan. The run it was training resumes from its last checkpoint when the study is
    started again."""
    global _WATCHING_PARENT
    if _WATCHING_PARENT:
        return
    _WATCHING_PARENT = True

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _worker(args: tuple[Study, PlannedRun, int, int]) -> tuple[PlannedRun, float]:
    study, run, threads, parent = args
    exit_with_parent(parent)
    return run, execute_run(study, run, threads)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def run_study(
    study: Study,
    out_dir: str | Path,
    jobs: int = 1,
    log: Callable[[str], None] | None = None,
    plan: list[PlannedRun] | None = None,
    threads: int = DEFAULT_THREADS,
) -> list[PlannedRun]:
    """Run every unfinished run of ``study`` (or of ``plan``) into ``out_dir`` (``jobs`` processes at once, each
    run with ``threads`` intra-op threads) and return the plan.

    Progress goes to ``log`` (default: stdout) as one plain line per finished run: runs and cells done out of
    the total, and the time left estimated from the mean duration of this session's runs.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    log = log or (lambda line: print(line, flush=True))
    study.check_data()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if study.source is not None:
        atomic_write_text(out_dir / "study.yaml", study.source.read_text())
    plan = plan_runs(study, out_dir) if plan is None else plan
    todo = [r for r in plan if not r.finished]
    cells = {r.cell.key for r in plan}
    seeds = {r.seed for r in plan}
    done_runs = {r.run_dir for r in plan if r.finished}
    log(
        f"study {study.name}: {len(cells)} cells x {len(seeds)} seeds = {len(plan)} runs; "
        f"{len(plan) - len(todo)} already finished, {sum(r.interrupted for r in todo)} to resume, "
        f"{len(todo)} to run with {jobs} job(s)"
    )
    durations: list[float] = []

    def report(run: PlannedRun, seconds: float) -> None:
        durations.append(seconds)
        done_runs.add(run.run_dir)
        cells_done = sum(all(r.run_dir in done_runs for r in plan if r.cell.key == key) for key in cells)
        left = len(plan) - len(done_runs)
        eta = _duration(sum(durations) / len(durations) * left / jobs)
        log(
            f"[{len(done_runs)}/{len(plan)} runs, {cells_done}/{len(cells)} cells] {run.cell.label} seed {run.seed} "
            f"finished in {_duration(seconds)}; about {eta} left"
        )

    if jobs == 1 or len(todo) <= 1:
        for run in todo:
            report(run, execute_run(study, run, threads))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: a fresh interpreter per worker, so that no OpenMP thread pool is forked mid-use
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_worker, (study, run, threads, os.getpid())) for run in todo]
            for future in as_completed(futures):
                run, seconds = future.result()
                report(run, seconds)
    sys.stdout.flush()
    return plan
