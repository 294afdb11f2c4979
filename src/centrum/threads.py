"""How many CPU threads a training or embedding process gives PyTorch: a policy that holds up on a shared machine.

PyTorch's default is one intra-op thread per physical core. Its CPU kernels split each operation into one
chunk per thread (OpenMP, static schedule) and wait for the slowest chunk at the end of every operation. On a
machine where another process keeps the cores busy, one of our threads is always waiting for the scheduler,
the others spin at the barrier, and a small CNN's many short operations each take as long as the descheduled
thread's time slice: on this 2-core machine one Fashion-MNIST epoch took 77 s with the default 2 threads beside
another job against 6 s with 1 thread (``benchmarks/threads.py`` measures it). Fewer threads than cores leave
the operating system room to run our threads on cores the other work is not using, at a small cost when the
machine is idle.

The policy of :func:`choose_threads`, in order:

1. ``CENTRUM_THREADS`` (a positive integer) when set: the user's choice for centrum alone;
2. ``OMP_NUM_THREADS`` when set: the standard variable, respected as is;
3. otherwise half of the cores this process may run on (``os.sched_getaffinity``, so a container's or
   ``taskset``'s limit counts), after one core per data-loader worker (each worker is a process that
   PyTorch runs with one thread), at least 1 and at most :data:`MAX_THREADS`.

The choice deliberately ignores the machine's current load: the thread count changes the order of floating-point
sums inside kernels, so a seeded run is deterministic for a fixed thread count only, and a choice that followed
the load would make the same command give different numbers on a busy and on an idle machine (the load average
also lags by a minute). Set ``CENTRUM_THREADS`` to pin the count, e.g. to compare runs across machines.

Inter-op threads (PyTorch's pool for independent operations, used by TorchScript's ``fork``; a Lightning
training step runs none) are set to 1 when the pool has not started yet.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

#: at most this many intra-op threads by default: small models gain little beyond it, and a machine with more
#: cores is more likely shared with other work
MAX_THREADS = 8

ENV_VAR = "CENTRUM_THREADS"


@dataclass(frozen=True)
class ThreadChoice:
    """A thread-count decision: ``intra_op`` threads, and why (``source``: ``"CENTRUM_THREADS"``,
    ``"OMP_NUM_THREADS"`` or ``"policy"``), with the usable ``cores`` and data-loader ``workers`` it counted."""

    intra_op: int
    source: str
    cores: int
    workers: int

    def describe(self) -> str:
        """One line for logs, e.g. ``"1 thread (policy: 2 cores, 0 data-loader workers)"``."""
        noun = "thread" if self.intra_op == 1 else "threads"
        if self.source == "policy":
            return f"{self.intra_op} {noun} (policy: {self.cores} cores, {self.workers} data-loader workers)"
        return f"{self.intra_op} {noun} (from {self.source})"


def usable_cores() -> int:
    """The number of CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        return max(1, os.cpu_count() or 1)


def _positive_int(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}={raw!r} is not a positive integer (the number of CPU threads to use)")
    return value


def choose_threads(
    num_workers: int | None = None, *, environ: Mapping[str, str] | None = None, cores: int | None = None
) -> ThreadChoice:
    """The intra-op thread count of the module's policy for a process with ``num_workers`` data-loader workers.

    ``environ`` (default ``os.environ``) and ``cores`` (default :func:`usable_cores`) are for callers that
    decide for another process. Raises ``ValueError`` naming the variable when ``CENTRUM_THREADS`` or
    ``OMP_NUM_THREADS`` is set to something that is not a positive integer.
    """
    environ = os.environ if environ is None else environ
    cores = usable_cores() if cores is None else max(1, int(cores))
    workers = max(0, int(num_workers or 0))
    for name in (ENV_VAR, "OMP_NUM_THREADS"):
        value = _positive_int(environ, name)
        if value is not None:
            return ThreadChoice(value, name, cores, workers)
    free = max(1, cores - workers)
    return ThreadChoice(max(1, min(MAX_THREADS, free // 2)), "policy", cores, workers)


def configure_threads(num_workers: int | None = None) -> int:
    """Set PyTorch's intra-op threads (and inter-op threads to 1 where still possible) by :func:`choose_threads`;
    return the intra-op count chosen.

    Call it once per process before training or embedding (the CLI and the demo do). Calling it again applies
    the policy again (intra-op threads may change at any time).
    """
    import torch

    choice = choose_threads(num_workers)
    torch.set_num_threads(choice.intra_op)
    # once the inter-op pool has started (or was set before) it can no longer change; it needs not
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    return choice.intra_op
