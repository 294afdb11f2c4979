"""Input checks shared by every public entry point: bad input gets a ``ValueError`` that says what is wrong.

Two kinds of check: those on a tensor's shape and dtype, which read nothing from the device and always run, and
*value* checks (NaN/inf scans, label ranges, class counts), which read the data back to the host and so make a GPU
wait. Value checks run for every direct call, and are skipped inside :func:`trusted_inputs` (the training step,
whose batches were checked where they entered, by the P x M sampler and the data pipeline) and inside
code compiled by ``torch.compile``, which cannot branch on data.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

# module-level (not thread-local) so that torch.compile can read it without a graph break
_VALUE_CHECKS = True


def value_checks_enabled() -> bool:
    """Whether checks that read tensor values (and so synchronise with the device) run now: outside
    :func:`trusted_inputs` and outside code being compiled by ``torch.compile``."""
    return not torch.compiler.is_compiling() and _VALUE_CHECKS


@contextmanager
def trusted_inputs() -> Iterator[None]:
    """Skip the value checks (NaN/inf scans, label ranges, class layouts) of every loss called inside: the
    caller vouches for the values. Shape and dtype checks still run. Used by the training step, whose batches
    the P x M sampler built and whose inputs were checked once where they entered."""
    global _VALUE_CHECKS
    before, _VALUE_CHECKS = _VALUE_CHECKS, False
    try:
        yield
    finally:
        _VALUE_CHECKS = before


def as_tensor(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """Return ``x`` as a torch tensor (NumPy arrays are wrapped without copying)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    try:
        return torch.as_tensor(x)
    except Exception as exc:  # pragma: no cover - message only
        raise ValueError(f"{name} must be a tensor or array, got {type(x).__name__}") from exc


def check_embeddings(embeddings: torch.Tensor | np.ndarray, name: str = "embeddings") -> torch.Tensor:
    """Check that ``embeddings`` is a non-empty 2-D float matrix of finite values and return it as a tensor
    (the finiteness scan is a value check, see :func:`value_checks_enabled`)."""
    e = as_tensor(embeddings, name)
    if e.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N x D) matrix, got shape {tuple(e.shape)}")
    if e.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows)")
    if e.shape[1] == 0:
        raise ValueError(f"{name} has 0 dimensions")
    if not torch.is_floating_point(e):
        raise ValueError(f"{name} must be floating point, got {e.dtype}")
    if not value_checks_enabled():
        return e
    finite = torch.isfinite(e)
    if not bool(finite.all()):
        bad_rows = (~finite).any(dim=1).nonzero().flatten()
        shown = ", ".join(str(int(i)) for i in bad_rows[:5])
        more = f" (and {len(bad_rows) - 5} more)" if len(bad_rows) > 5 else ""
        raise ValueError(f"{name} contains NaN or inf values in {len(bad_rows)} row(s): {shown}{more}")
    return e


def check_labels(
    labels: torch.Tensor | np.ndarray, n: int, name: str = "labels", of: str = "embeddings"
) -> torch.Tensor:
    """Check that ``labels`` is a 1-D integer vector of length ``n`` and return it as an int64 tensor."""
    lab = as_tensor(labels, name)
    if lab.ndim != 1:
        raise ValueError(f"{name} must be a 1-D vector, got shape {tuple(lab.shape)}")
    if lab.shape[0] != n:
        raise ValueError(f"{name} has {lab.shape[0]} entries but {of} has {n} rows")
    if torch.is_floating_point(lab) or lab.dtype == torch.bool or lab.is_complex():
        raise ValueError(f"{name} must be integers, got {lab.dtype}")
    return lab.long()


def check_embeddings_labels(
    embeddings: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    name: str = "embeddings",
    labels_name: str = "labels",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a batch of embeddings (N x D, finite) and their N integer labels; return both as tensors."""
    e = check_embeddings(embeddings, name)
    lab = check_labels(labels, e.shape[0], name=labels_name, of=name)
    return e, lab.to(e.device)


def check_class_blocks(labels: torch.Tensor, samples_per_class: int, name: str = "labels") -> None:
    """Check that ``labels`` is laid out in class-major blocks of ``samples_per_class`` (rows ``c M .. c M + M - 1``
    share a label, each block a different label), the order of the P x M sampler's batches. A value check: it
    does nothing inside :func:`trusted_inputs` or compiled code."""
    M, N = int(samples_per_class), labels.shape[0]
    if M < 1 or N % M:
        raise ValueError(f"{name} has {N} entries, not a whole number of blocks of samples_per_class={M}")
    if not value_checks_enabled():
        return
    blocks = labels.view(N // M, M)
    if not bool((blocks == blocks[:, :1]).all()):
        raise ValueError(f"{name} are not in class-major blocks of {M} (the P x M sampler's order): {labels.tolist()}")
    if torch.unique(blocks[:, 0]).numel() != N // M:
        raise ValueError(f"{name} repeat a class in two blocks of {M}; each block must be a different class")
