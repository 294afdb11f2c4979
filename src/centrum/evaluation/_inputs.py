"""Validation of the query / gallery arrays shared by the protocols: every error names the array at fault."""

from __future__ import annotations

import numpy as np
import torch

from centrum.distances import check_metric
from centrum.evaluation._ranking import DistanceBlocks
from centrum.validation import as_tensor, check_embeddings, check_labels

ArrayLike = torch.Tensor | np.ndarray


def _embeddings(x: ArrayLike, name: str) -> torch.Tensor:
    """:func:`check_embeddings`, with the finiteness test done by one min/max pass (NaN propagates)."""
    e = as_tensor(x, name)
    if e.ndim == 2 and e.numel() and torch.is_floating_point(e):
        low, high = torch.aminmax(e)
        if bool(torch.isfinite(low) & torch.isfinite(high)):
            return e
    return check_embeddings(e, name)  # raises the detailed error


def check_query_gallery(
    query: ArrayLike,
    gallery: ArrayLike,
    query_labels: ArrayLike,
    gallery_labels: ArrayLike,
    metric: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate both embedding sets (same dimension) and their labels; return tensors on the query's device."""
    check_metric(metric)
    q = _embeddings(query, "query")
    g = _embeddings(gallery, "gallery").to(q.device)
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


def check_distances(
    distances: ArrayLike, query_labels: ArrayLike, gallery_labels: ArrayLike
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate a Q x G distance matrix (smaller = closer, no NaN; +-inf allowed) and the labels of its rows
    and columns; return tensors on the matrix's device."""
    d = as_tensor(distances, "distances")
    if d.ndim != 2:
        raise ValueError(f"distances must be a 2-D (num_query x num_gallery) matrix, got shape {tuple(d.shape)}")
    if d.shape[0] == 0 or d.shape[1] == 0:
        raise ValueError(f"distances is empty (shape {tuple(d.shape)})")
    if d.dtype == torch.bool or d.is_complex():
        raise ValueError(f"distances must be real numbers, got {d.dtype}")
    if not torch.is_floating_point(d):
        d = d.double()
    if d.dtype not in (torch.float32, torch.float64):
        d = d.float()  # float16 / bfloat16: exactly representable in float32
    if bool(torch.isnan(d.max())):  # max propagates NaN: one pass, no Q x G mask
        bad_rows = torch.isnan(d).any(dim=1).nonzero().flatten()
        shown = ", ".join(str(int(i)) for i in bad_rows[:5])
        more = f" (and {len(bad_rows) - 5} more)" if len(bad_rows) > 5 else ""
        raise ValueError(f"distances contains NaN values in {len(bad_rows)} row(s): {shown}{more}")
    labels = []
    for name, value, n, what in (
        ("query_labels", query_labels, d.shape[0], "rows (one per query)"),
        ("gallery_labels", gallery_labels, d.shape[1], "columns (one per gallery item)"),
    ):
        if value is None:
            raise ValueError(f"{name} is required")
        lab = as_tensor(value, name)
        if lab.ndim == 1 and lab.shape[0] != n:
            raise ValueError(f"{name} has {lab.shape[0]} entries but distances has {n} {what}")
        labels.append(check_labels(lab, n, name, "distances").to(d.device))
    return d, labels[0], labels[1]


def query_gallery_blocks(
    query: ArrayLike | None,
    gallery: ArrayLike | None,
    query_labels: ArrayLike | None,
    gallery_labels: ArrayLike | None,
    distances: ArrayLike | None,
    metric: str,
) -> tuple[DistanceBlocks, torch.Tensor, torch.Tensor]:
    """The query x gallery distances as :class:`DistanceBlocks` (from embeddings or from ``distances``,
    exactly one of the two) and the validated labels."""
    if distances is not None:
        if query is not None or gallery is not None:
            raise ValueError("give either query and gallery embeddings or distances, not both")
        check_metric(metric)
        if hasattr(distances, "block") and hasattr(distances, "ranks"):  # computed block by block (re-ranked)
            num_query, num_gallery = distances.shape
            labels = []
            for name, value, n in (
                ("query_labels", query_labels, num_query),
                ("gallery_labels", gallery_labels, num_gallery),
            ):
                if value is None:
                    raise ValueError(f"{name} is required")
                labels.append(check_labels(value, n, name, "distances").to(distances.device))
            return distances, labels[0], labels[1]
        d, ql, gl = check_distances(distances, query_labels, gallery_labels)
        return DistanceBlocks.from_matrix(d), ql, gl
    if query is None or gallery is None:
        raise ValueError("give query and gallery embeddings, or a query x gallery distances matrix")
    if query_labels is None or gallery_labels is None:
        raise ValueError("query_labels and gallery_labels are required")
    q, g, ql, gl = check_query_gallery(query, gallery, query_labels, gallery_labels, metric)
    return DistanceBlocks.from_embeddings(q, g, metric), ql, gl
