"""Validation of the query / gallery arrays shared by the protocols: every error names the array at fault."""

from __future__ import annotations

import numpy as np
import torch

from centrum.distances import check_metric
from centrum.validation import check_embeddings, check_labels

ArrayLike = torch.Tensor | np.ndarray


def check_query_gallery(
    query: ArrayLike,
    gallery: ArrayLike,
    query_labels: ArrayLike,
    gallery_labels: ArrayLike,
    metric: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate both embedding sets (same dimension) and their labels; return tensors on the query's device."""
    check_metric(metric)
    q = check_embeddings(query, "query")
    g = check_embeddings(gallery, "gallery").to(q.device)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query has {q.shape[1]}-d embeddings but gallery has {g.shape[1]}-d embeddings")
    ql = check_labels(query_labels, q.shape[0], "query_labels", "query").to(q.device)
    gl = check_labels(gallery_labels, g.shape[0], "gallery_labels", "gallery").to(q.device)
    return q, g, ql, gl


def check_cameras(
    query_cameras: ArrayLike | None, gallery_cameras: ArrayLike | None, num_query: int, num_gallery: int, device
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Validate the camera ids: both given (integers, one per row) or both ``None`` (no camera filter)."""
    if (query_cameras is None) != (gallery_cameras is None):
        given, missing = (
            ("query_cameras", "gallery_cameras") if gallery_cameras is None else ("gallery_cameras", "query_cameras")
        )
        raise ValueError(f"{given} was given but {missing} was not: pass camera ids for both sets or for neither")
    if query_cameras is None:
        return None, None
    qc = check_labels(query_cameras, num_query, "query_cameras", "query").to(device)
    gc = check_labels(gallery_cameras, num_gallery, "gallery_cameras", "gallery").to(device)
    return qc, gc


def check_ks(ks, name: str) -> tuple[int, ...]:
    """Positive integer cut-offs, sorted and de-duplicated."""
    try:
        values = tuple(sorted({int(k) for k in ks}))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of positive integers, got {ks!r}") from exc
    if not values or values[0] < 1:
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {ks!r}")
    return values
