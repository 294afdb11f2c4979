"""Pairwise distances and similarities shared by the losses, the evaluation and the indices.

All functions are pure tensor functions. Half-precision inputs are computed in float32, because
squared-norm expansions lose most of their digits in float16.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Metric = Literal["euclidean", "squared_euclidean", "cosine", "dot"]
METRICS: tuple[str, ...] = ("euclidean", "squared_euclidean", "cosine", "dot")


def check_metric(metric: str) -> str:
    """Return ``metric`` if it names a known distance, else raise a ``ValueError`` listing them."""
    if metric not in METRICS:
        raise ValueError(f"unknown distance {metric!r}; choose one of {', '.join(METRICS)}")
    return metric


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each row of ``x`` to unit Euclidean norm (rows of zeros stay zero)."""
    return F.normalize(x.float(), p=2.0, dim=-1, eps=eps)


def squared_euclidean(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances ``||x_i - y_j||^2`` between the rows of ``x`` and ``y``, clamped at 0.

    Uses the expansion ``|x|^2 + |y|^2 - 2 x.y`` (one matrix product), computed in float32.
    """
    x = x.float()
    y = x if y is None else y.float()
    x_sq = (x * x).sum(dim=1, keepdim=True)
    y_sq = (y * y).sum(dim=1, keepdim=True).T
    d2 = x_sq + y_sq - 2.0 * (x @ y.T)
    return d2.clamp_min(0.0)


def euclidean(x: torch.Tensor, y: torch.Tensor | None = None, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distances ``||x_i - y_j||`` between the rows of ``x`` and ``y``.

    The square root is taken of ``max(d^2, eps)`` so that the gradient stays finite for identical
    points (the distance of a point to itself reads ``sqrt(eps)`` = 1e-6 instead of 0).
    """
    return squared_euclidean(x, y).clamp_min(eps).sqrt()


def cosine_similarity(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine similarities between the rows of ``x`` and ``y``, in [-1, 1]."""
    xn = l2_normalize(x)
    yn = xn if y is None else l2_normalize(y)
    return xn @ yn.T


def pairwise_distance(x: torch.Tensor, y: torch.Tensor | None = None, metric: str = "euclidean") -> torch.Tensor:
    """Dissimilarity matrix (smaller = closer) between the rows of ``x`` (N x D) and ``y`` (M x D).

    ``metric``: ``"euclidean"``, ``"squared_euclidean"``, ``"cosine"`` (1 - cosine similarity) or
    ``"dot"`` (negative inner product). Returns an N x M float32 tensor.
    """
    check_metric(metric)
    if metric == "euclidean":
        return euclidean(x, y)
    if metric == "squared_euclidean":
        return squared_euclidean(x, y)
    if metric == "cosine":
        return 1.0 - cosine_similarity(x, y)
    y = x if y is None else y
    return -(x.float() @ y.float().T)


def pairwise_similarity(x: torch.Tensor, y: torch.Tensor | None = None, metric: str = "dot") -> torch.Tensor:
    """Similarity matrix (larger = closer): the negative of :func:`pairwise_distance`, except
    ``"cosine"`` returns the cosine itself and ``"dot"`` the inner product."""
    check_metric(metric)
    if metric == "cosine":
        return cosine_similarity(x, y)
    return -pairwise_distance(x, y, metric)
