"""Runs that share a process train exactly as runs in a fresh one.

A study's workers are long-lived (they import torch once and take run after run), and ``--jobs 1`` trains every
run in the study's own process, so each run must start from a fresh interpreter's process state whatever ran
before it: :func:`fresh_run_state` resets it. Checked on the tiny stripes study (one cell, 2 steps): the process
state dirtied as a previous run or the caller could leave it gives the clean run's weights bit for bit, while a
thread count left by the caller, not reset, does change them; a pool worker trains the same run first (a fresh
interpreter) and again after another run with identical weights; killing a study's process ends its workers.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from centrum.study import plan_runs, run_study, study_from_dict
from centrum.study.runner import FRESH_TORCH_SEED, RUN_ENVIRONMENT, WorkerPool, execute_run, fresh_run_state
from processes import alive


@pytest.fixture(scope="module")
def small_study(stripes_csv_study: Path, study_data):
    """The tiny study cut to 2 training steps, no evaluation during training and seed 0 only."""
    data = study_data(stripes_csv_study)
    data["overrides"] = {"trainer.limit_train_batches": 2, "trainer.eval_every": 0}
    data["seeds"] = [0]
    return study_from_dict(data)


def _digest(run) -> str:
    return json.loads((run.run_dir / "final_state.json").read_text())["weights_sha256"]


def _the_run(study, out: Path, cell: int = 1, seed: int = 0):
    """The planned run of ``study``'s cell ``cell`` (default: triplet + Symm) at ``seed`` in ``out``."""
    return plan_runs(study, out, [seed], [study.cells()[cell]])[0]


@pytest.fixture(scope="module")
def clean_digest(small_study, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Weights of the run trained in this (test) process with nothing changed beforehand."""
    run = _the_run(small_study, tmp_path_factory.mktemp("clean"))
    execute_run(small_study, run)
    return _digest(run)


class _DirtyState:
    """Process-wide settings as a previous run or the caller could leave them: Lightning's ``deterministic``
    flags, a GPU run's precision settings, moved random streams, seeding variables."""

    def __enter__(self) -> _DirtyState:
        self.saved_env = {name: os.environ.get(name) for name in RUN_ENVIRONMENT}
        random.seed(123), np.random.seed(123), torch.manual_seed(123)
        torch.rand(7)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("medium")
        torch.set_default_dtype(torch.float64)
        torch.set_grad_enabled(False)
        torch.set_num_threads(2)
        os.environ["PL_GLOBAL_SEED"], os.environ["PL_SEED_WORKERS"] = "99", "0"
        return self

    def __exit__(self, *exc) -> None:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = False
        torch.set_float32_matmul_precision("highest")
        torch.set_default_dtype(torch.float32)
        torch.set_grad_enabled(True)
        torch.set_num_threads(1)
        for name, value in self.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_fresh_run_state_gives_torch_defaults_and_puts_the_callers_state_back() -> None:
    with _DirtyState():
        torch.manual_seed(5)
        after_caller = torch.rand(1).item()
        torch.manual_seed(5)
        with fresh_run_state(threads=1):
            assert torch.initial_seed() == FRESH_TORCH_SEED
            random_value, numpy_value = random.random(), np.random.rand()
            assert torch.get_num_threads() == 1
            assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
            assert torch.get_float32_matmul_precision() == "highest"
            assert torch.get_default_dtype() == torch.float32 and torch.is_grad_enabled()
            os.environ["PL_GLOBAL_SEED"] = "7"  # as seed_everything does
            torch.rand(100)
        # the streams of a fresh start: Python's and NumPy's seeded with 0
        random.seed(0), np.random.seed(0)
        assert (random_value, numpy_value) == (random.random(), np.random.rand())
        # the caller's state is back, its torch stream where it was
        assert torch.rand(1).item() == after_caller
        assert torch.get_num_threads() == 2 and torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled() and torch.backends.cudnn.benchmark
        assert torch.get_float32_matmul_precision() == "medium"
        assert torch.get_default_dtype() == torch.float64 and not torch.is_grad_enabled()
        assert os.environ["PL_GLOBAL_SEED"] == "99"


def test_a_run_after_a_dirty_process_state_has_the_clean_runs_weights(small_study, clean_digest, tmp_path) -> None:
    run = _the_run(small_study, tmp_path)
    with _DirtyState():
        execute_run(small_study, run)
        assert torch.get_float32_matmul_precision() == "medium"  # the caller's settings survive the run
    assert _digest(run) == clean_digest


def test_without_the_reset_a_leftover_setting_changes_the_weights(small_study, clean_digest, tmp_path) -> None:
    """The check above has teeth: a thread count left by the caller (2 instead of the study's 1; a CPU kernel
    sums in another order) changes the weights of a run that does not reset it."""
    from centrum.study.callbacks import FinalState
    from centrum.training import train

    run = _the_run(small_study, tmp_path)
    config = small_study.config(run.cell, run.seed)
    torch.set_num_threads(2)
    try:
        train(config, run.run_dir, enable_progress_bar=False, callbacks=[FinalState(run.run_dir)])
    finally:
        torch.set_num_threads(1)
    assert _digest(run) != clean_digest


@pytest.mark.slow
def test_a_reused_pool_worker_trains_the_same_weights_as_a_fresh_one(small_study, clean_digest, tmp_path) -> None:
    """One worker trains the run first (a fresh interpreter), then another cell and seed, then the run again:
    the same worker each time (kept open across run_study calls, as --sequential does) and identical weights,
    equal to those of the run trained in this process."""
    first, other, again = (
        _the_run(small_study, tmp_path / "a"),
        _the_run(small_study, tmp_path / "b", cell=0, seed=1),
        _the_run(small_study, tmp_path / "c"),
    )
    lines: list[str] = []
    with WorkerPool(1) as pool:
        for run in (first, other, again):
            run_study(small_study, run.run_dir.parents[2], plan=[run], pool=pool, log=lines.append)
    assert all(r.finished for r in (first, other, again)) and "1 to run with 1 job(s)" in lines[0]
    pids = {pool.worker_of[r.run_dir] for r in (first, other, again)}
    assert len(pids) == 1 and os.getpid() not in pids
    assert _digest(first) == _digest(again) == clean_digest != _digest(other)


PARENT = textwrap.dedent(
    """
    import sys, time
    from centrum.study.runner import WorkerPool

    if __name__ == "__main__":
        pool = WorkerPool(2, watch_interval=0.1)
        print(*pool.warm(), flush=True)
        time.sleep(120)
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_the_study_ends_its_pool_workers(tmp_path) -> None:
    script = tmp_path / "study.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    try:
        assert workers and all(alive(pid) for pid in workers)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in workers)
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, 9)
