"""Input checks shared by every public entry point: bad input gets a ``ValueError`` that says what is wrong."""

from __future__ import annotations

import numpy as np
import torch


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
    """Check that ``embeddings`` is a non-empty 2-D float matrix of finite values and return it as a tensor."""
    e = as_tensor(embeddings, name)
    if e.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N x D) matrix, got shape {tuple(e.shape)}")
    if e.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows)")
    if e.shape[1] == 0:
        raise ValueError(f"{name} has 0 dimensions")
    if not torch.is_floating_point(e):
        raise ValueError(f"{name} must be floating point, got {e.dtype}")
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
