"""Running a study: every cell x seed through :func:`centrum.training.train`, resumable, optionally in parallel.

Runs live in ``OUT/runs/<cell key>/seed-<s>/``. A run with ``results.json`` is finished and skipped; a run with
``checkpoints/last.ckpt`` but no results was interrupted and resumes from that checkpoint; any other starts fresh.
Every arm gets the same code, data, seeds and schedule; the model kept is the one at the end of training.

Every run trains with the same number of intra-op threads (``threads``, default :data:`DEFAULT_THREADS`) whether
the study runs with ``--jobs 1`` or more: a CPU matrix product split over a different number of threads sums in a
different order, so before this runs of a ``--jobs 1`` and a ``--jobs 2`` study differed by up to 1.3e-4. With the
thread count fixed, a run's weights are the same bit for bit whichever ``--jobs`` trained it.

With ``--jobs N`` the runs go to a :class:`WorkerPool`: ``N`` long-lived worker processes, each of which imports
torch and centrum once (about 5 s on a 2-core machine, as long as a whole ``--quick`` run's training) and then
takes run after run from the pool's queue; ``--sequential`` keeps the same pool over all its looks. A run that
reuses a worker must end exactly as in a fresh one, so :func:`fresh_run_state` puts back, before every run, every
process-wide setting a run reads or Lightning changes: the intra-op thread count, the global random streams
(Python, NumPy, torch CPU and CUDA, seeded as a fresh interpreter's torch is), deterministic-algorithm and cuDNN
flags, float32 matmul precision, the default dtype, autograd, and the environment variables Lightning's seeding
sets; and after the run it puts the caller's values back.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


#: torch's CPU seed in a fresh interpreter (``torch.initial_seed()`` before any ``manual_seed``)
FRESH_TORCH_SEED = 67280421310721

#: the environment variables a run's seeding and determinism settings write (Lightning's ``seed_everything``,
#: its ``deterministic`` flag for cuBLAS)
RUN_ENVIRONMENT = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "CUBLAS_WORKSPACE_CONFIG")


@contextlib.contextmanager
def fresh_run_state(threads: int | None = DEFAULT_THREADS) -> Iterator[None]:
    """Run the body (one training run) in the process-wide state of a fresh interpreter, then put the caller's
    state back.

    Inside: ``threads`` intra-op threads (None: leave torch's setting); Python's ``random`` and NumPy's global
    stream seeded with 0 and torch's CPU and CUDA streams with :data:`FRESH_TORCH_SEED`; deterministic algorithms
    off, cuDNN's ``benchmark`` and ``deterministic`` off, float32 matmul precision ``"highest"``, default dtype
    float32, autograd on: torch's defaults, which Lightning's ``deterministic`` flag and a GPU run's precision
    settings change for the rest of the process. After: every one of these, the random streams and the
    :data:`RUN_ENVIRONMENT` variables as they were before. A run in a worker that has trained others therefore
    starts from exactly the state of a run in a new process (``tests/study/test_study_pool.py`` checks the weights).
    """
    import numpy as np
    import torch

    from centrum.rng import preserved_rng

    saved_threads = torch.get_num_threads()
    saved_deterministic = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    saved_cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    saved_matmul = torch.get_float32_matmul_precision()
    saved_dtype = torch.get_default_dtype()
    saved_grad = torch.is_grad_enabled()
    saved_env = {name: os.environ.get(name) for name in RUN_ENVIRONMENT}
    with preserved_rng():
        try:
            random.seed(0)
            np.random.seed(0)
            torch.manual_seed(FRESH_TORCH_SEED)  # every CUDA device too (lazily, when CUDA starts)
            torch.use_deterministic_algorithms(False)
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = False
            torch.set_float32_matmul_precision("highest")
            torch.set_default_dtype(torch.float32)
            torch.set_grad_enabled(True)
            if threads:
                torch.set_num_threads(threads)
            yield
        finally:
            torch.set_num_threads(saved_threads)
            torch.use_deterministic_algorithms(saved_deterministic[0], warn_only=saved_deterministic[1])
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved_cudnn
            torch.set_float32_matmul_precision(saved_matmul)
            torch.set_default_dtype(saved_dtype)
            torch.set_grad_enabled(saved_grad)
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def execute_run(study: Study, run: PlannedRun, threads: int | None = DEFAULT_THREADS) -> float:
    """Train one planned run (resuming it when interrupted) with the study's callbacks and ``threads`` intra-op
    threads (None: leave torch's setting), in a fresh process state (:func:`fresh_run_state`); returns its
    seconds."""
    from centrum.study.callbacks import EmbeddingSnapshots, FinalState, StepCost
    from centrum.training import train

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
    with fresh_run_state(threads):
        try:
            train(config, run.run_dir, resume=run.interrupted, enable_progress_bar=False, callbacks=callbacks)
        except (ValueError, FileNotFoundError) as exc:  # a bad cell: say which one, in the CLI's one line
            raise type(exc)(f"study {study.name!r}, cell {run.cell.label!r}, seed {run.seed}: {exc}") from exc
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


def _init_worker(parent: int, watch_interval: float) -> None:
    """A pool worker's start: watch the study's process, then import torch, Lightning and centrum's training
    once, before the first run arrives (all workers import at once instead of each with its first run)."""
    exit_with_parent(parent, watch_interval)
    import centrum.study.callbacks
    import centrum.training  # noqa: F401


def _release_memory() -> None:
    """Between runs in a worker: free what the finished run's trainer, model and loaders still hold (they form
    reference cycles), so that a worker's memory does not grow run after run."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _pool_run(args: tuple[Study, PlannedRun, int | None]) -> tuple[PlannedRun, float, int]:
    study, run, threads = args
    try:
        return run, execute_run(study, run, threads), os.getpid()
    finally:
        _release_memory()


def _worker_pid() -> int:
    return os.getpid()


class WorkerPool:
    """``jobs`` long-lived worker processes that each import torch and centrum once and then train run after run
    from one queue (a study's runs, or every look's runs of a sequential study).

    Workers are spawned (a fresh interpreter, so that no OpenMP thread pool is forked mid-use) and exit with the
    process that made the pool, even when it is killed with SIGKILL (:func:`exit_with_parent`). Every run starts
    from a fresh process state (:func:`fresh_run_state`), so a run's weights do not depend on which worker
    trained it nor on what that worker trained before. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, jobs: int, watch_interval: float = 2.0) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, got {jobs}")
        self.jobs = jobs
        #: the worker process that trained each run (by run folder), for progress and tests
        self.worker_of: dict[Path, int] = {}
        self._executor = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=mp.get_context("spawn"),
            initializer=_init_worker,
            initargs=(os.getpid(), watch_interval),
        )

    def warm(self) -> list[int]:
        """Start the workers now (each imports torch and centrum) and return their process ids; runs submitted
        later find them ready."""
        seen = {f.result() for f in [self._executor.submit(_worker_pid) for _ in range(self.jobs)]}
        # one worker may have answered every call; the executor knows every process it started
        return sorted(seen | set(getattr(self._executor, "_processes", None) or {}))

    def submit(self, study: Study, run: PlannedRun, threads: int | None = DEFAULT_THREADS) -> Future:
        """Queue one run; the future's result is ``(run, seconds, worker pid)``."""
        return self._executor.submit(_pool_run, (study, run, threads))

    def run(
        self, study: Study, runs: list[PlannedRun], threads: int | None = DEFAULT_THREADS
    ) -> Iterator[tuple[PlannedRun, float]]:
        """Queue ``runs`` and yield ``(run, seconds)`` for each as it finishes (a run's error is raised here)."""
        from concurrent.futures import as_completed

        futures = [self.submit(study, run, threads) for run in runs]
        try:
            for future in as_completed(futures):
                run, seconds, pid = future.result()
                self.worker_of[run.run_dir] = pid
                yield run, seconds
        finally:
            for future in futures:  # a failed or abandoned run: the queued ones do not start
                future.cancel()

    def close(self, cancel: bool = False) -> None:
        """Wait for the runs in progress, then end the workers (``cancel``: drop the queued runs first)."""
        self._executor.shutdown(wait=True, cancel_futures=cancel)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(cancel=exc_type is not None)


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
    pool: WorkerPool | None = None,
) -> list[PlannedRun]:
    """Run every unfinished run of ``study`` (or of ``plan``) into ``out_dir`` and return the plan: with
    ``jobs`` 1 one after another in this process, else in a :class:`WorkerPool` of ``jobs`` workers (``pool``: an
    open pool to use, which then sets ``jobs``, kept open for the caller's next runs); each run with ``threads``
    intra-op threads.

    Progress goes to ``log`` (default: stdout) as one plain line per finished run: runs and cells done out of
    the total, and the time left estimated from the mean duration of this session's runs.
    """
    if pool is not None:
        jobs = pool.jobs
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

    if pool is None and (jobs == 1 or len(todo) <= 1):
        for run in todo:
            report(run, execute_run(study, run, threads))
    elif todo:
        with contextlib.ExitStack() as stack:
            if pool is None:
                pool = stack.enter_context(WorkerPool(jobs))
            for run, seconds in pool.run(study, todo, threads):
                report(run, seconds)
    sys.stdout.flush()
    return plan
