"""The thread-count policy: explicit variables win, otherwise half the usable cores after the data-loader
workers, within [1, MAX_THREADS]; configure_threads applies it to PyTorch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from centrum.threads import MAX_THREADS, choose_threads, configure_threads, usable_cores


@pytest.mark.parametrize(
    ("cores", "workers", "expected"),
    [(1, 0, 1), (2, 0, 1), (2, 4, 1), (4, 0, 2), (8, 2, 3), (16, 0, 8), (64, 0, MAX_THREADS), (64, 8, MAX_THREADS)],
)
def test_policy_halves_the_cores_left_by_the_workers(cores: int, workers: int, expected: int) -> None:
    choice = choose_threads(workers, environ={}, cores=cores)
    assert (choice.intra_op, choice.source, choice.cores, choice.workers) == (expected, "policy", cores, workers)


def test_explicit_variables_win_centrum_first() -> None:
    assert choose_threads(0, environ={"OMP_NUM_THREADS": "3"}, cores=2).intra_op == 3
    both = choose_threads(0, environ={"OMP_NUM_THREADS": "3", "CENTRUM_THREADS": "5"}, cores=2)
    assert (both.intra_op, both.source) == (5, "CENTRUM_THREADS")
    assert choose_threads(0, environ={"CENTRUM_THREADS": " "}, cores=4).source == "policy"  # blank: unset
    assert choose_threads(None, environ={}, cores=4).describe() == "2 threads (policy: 4 cores, 0 data-loader workers)"


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_values_name_the_variable(value: str) -> None:
    with pytest.raises(ValueError, match=f"CENTRUM_THREADS='{value}' is not a positive integer"):
        choose_threads(0, environ={"CENTRUM_THREADS": value}, cores=2)


def test_usable_cores_follows_the_affinity_mask() -> None:
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no affinity call on this platform")
    assert usable_cores() == len(os.sched_getaffinity(0))


def test_configure_threads_sets_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setenv("CENTRUM_THREADS", "1")
    try:
        assert configure_threads(0) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_configure_threads_in_a_fresh_process_sets_inter_op_too() -> None:
    """In a new process (the inter-op pool not started yet), under a 1-core affinity mask where there is one."""
    code = (
        "import os, torch\n"
        "from centrum.threads import configure_threads\n"
        "if hasattr(os, 'sched_setaffinity'): os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "print(configure_threads(0), torch.get_num_threads(), torch.get_num_interop_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "CENTRUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["1", "1", "1"]
