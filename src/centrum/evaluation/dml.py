"""Class-disjoint metric-learning benchmarks (protocols.md 4): every test image queries all the others."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from centrum.distances import check_metric
from centrum.evaluation._inputs import ArrayLike, check_ks
from centrum.evaluation._ranking import (
    INT64_MAX,
    LabelGroups,
    PreparedGallery,
    auto_chunk_size,
    nearest_in_order,
    order_keys,
    serial_on_cpu,
)
from centrum.evaluation._symmetric import block_distance_function, symmetric_nearest_keys
from centrum.evaluation.clustering import kmeans_labels, normalized_mutual_info, pairwise_f1
from centrum.validation import check_embeddings_labels

DML_RECALL_KS = (1, 2, 4, 8)
SOP_RECALL_KS = (1, 10, 100, 1000)
# query x item pairs per block (128 MB of float32 distances): the N x N product runs near full speed
DML_CHUNK_ELEMENTS = 1 << 25
# rows of a square block of the symmetric pass (32M float32 distances, 128 MB)
DML_SIDE = 5792


def dml_metrics(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    recall_ks: Sequence[int] = DML_RECALL_KS,
    metric: str = "cosine",
    clustering: bool = True,
    seed: int = 0,
    kmeans: str = "auto",
    chunk_size: int | None = None,
) -> dict:
    """Recall@K, MAP@R, R-Precision and (with ``clustering``) NMI and F1 of one embedded test set.

    Each embedding queries all others (itself excluded); ranking by ascending ``metric`` distance
    (default ``"cosine"``), ties broken by index.
    - ``Recall@K``: 1 if one of the K nearest neighbours has the query's class, averaged over all queries;
    - ``MAP@R`` = ``sum_{i<=R} rel_i * precision@i / R`` and ``R-Precision`` = precision@R, with R the
      number of other images of the query's class; queries with R = 0 are excluded from both;
    - ``NMI`` and ``F1`` (pairwise) of a k-means clustering with k = number of classes, on the
      L2-normalised embeddings for the cosine metric (see :func:`kmeans_labels` for ``kmeans`` and ``seed``).
    No full ranking and no N x N matrix: queries go ``chunk_size`` at a time (default: blocks of about
    32M pairs), and only the first max(R) places are ranked (:func:`_chunk_scores`). Values are fractions.
    """
    ks = check_ks(recall_ks, "recall_ks")
    check_metric(metric)
    e, lab = check_embeddings_labels(embeddings, labels)
    prepared = PreparedGallery(e, metric)
    groups = LabelGroups(lab)
    n = e.shape[0]
    _, inverse, class_sizes = torch.unique(lab, return_inverse=True, return_counts=True)
    others = class_sizes[inverse] - 1  # R of every query
    if n > 1:
        first, map_at_r, r_precision = _symmetric_scores(prepared, metric, lab, others, groups, ks[-1], chunk_size)
    else:  # nobody else to rank
        first = torch.full((1,), INT64_MAX, dtype=torch.int64, device=e.device)
        map_at_r = r_precision = torch.zeros(1, dtype=torch.float64, device=e.device)
    valid = others > 0
    metrics: dict = {f"Recall@{k}": float((first <= k).double().mean()) for k in ks}
    if bool(valid.any()):
        metrics["MAP@R"] = float(map_at_r[valid].mean())
        metrics["R-Precision"] = float(r_precision[valid].mean())
    else:
        metrics["MAP@R"] = metrics["R-Precision"] = float("nan")
    if clustering:
        num_classes = int(torch.unique(lab).numel())
        clusters = kmeans_labels(prepared.vectors, num_classes, seed=seed, backend=kmeans)
        metrics["NMI"] = normalized_mutual_info(lab, clusters)
        metrics["F1"] = pairwise_f1(lab, clusters)
    metrics["num_queries"] = n
    metrics["num_queries_with_match"] = int(valid.sum())
    return metrics


def _neighbour_scores(
    neighbours: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor, others: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First-hit rank within the lists (int64 max: none), MAP@R and R-Precision from the exact nearest lists
    (B x k, k >= every R of the block) of the queries ``rows``."""
    B, k = neighbours.shape
    hits = labels[neighbours] == labels[rows][:, None]
    position = torch.arange(1, k + 1, device=neighbours.device, dtype=torch.float64)
    r = others.double()
    safe_r = r.clamp_min(1.0)
    within_r = hits & (position[None, :] <= r[:, None])
    precision = hits.cumsum(1).double() / position[None, :]
    map_at_r = torch.where(within_r, precision, 0.0).sum(1) / safe_r
    r_precision = within_r.sum(1).double() / safe_r
    inf_rank = torch.full((B,), INT64_MAX, dtype=torch.int64, device=neighbours.device)
    first = torch.where(hits.any(1), hits.to(torch.uint8).argmax(1) + 1, inf_rank)
    return first, map_at_r, r_precision


def _symmetric_scores(
    prepared: PreparedGallery,
    metric: str,
    labels: torch.Tensor,
    others: torch.Tensor,
    groups: LabelGroups,
    max_k: int,
    chunk_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First-hit rank, MAP@R and R-Precision of every item, from the symmetric N x N distances computed once
    per block pair (:mod:`centrum.evaluation._symmetric`: about half the products of a query-by-query pass).

    One pass keeps each item's exact ``k`` nearest others (k = max(R, min(max K, 32))); the few queries
    without a relevant item among them are then done by :func:`_chunk_scores` on their recomputed rows,
    so that each query's scores come from one row of distances.
    """
    n = labels.shape[0]
    k = min(n - 1, max(int(others.max()), min(max_k, 32), 1))
    side = int(chunk_size) if chunk_size else DML_SIDE
    keys = symmetric_nearest_keys(n, k, block_distance_function(prepared.vectors, metric), side, True)
    rows = torch.arange(n, device=keys.device)
    first, map_at_r, r_precision = _neighbour_scores(keys & 0xFFFFFFFF, rows, labels, others)
    del keys
    beyond = ((first == INT64_MAX) & (others > 0)).nonzero().flatten()
    step = auto_chunk_size(int(beyond.numel()), n, chunk_size, DML_CHUNK_ELEMENTS)
    for start in range(0, int(beyond.numel()), step):
        sub = beyond[start : start + step]
        dist = prepared.distances(prepared.vectors[sub])
        with serial_on_cpu(dist.device):
            first[sub], map_at_r[sub], r_precision[sub] = _chunk_scores(dist, sub, labels, others[sub], groups, max_k)
    return first, map_at_r, r_precision


def _chunk_scores(
    dist: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor, others: torch.Tensor, groups: LabelGroups, max_k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First-hit rank (int64 max: no hit), MAP@R and R-Precision of one block of queries (``dist``: B x N).

    Only the first ``max(R)`` places decide MAP@R and R-Precision, so they come from the exact ``k``
    nearest (:func:`nearest_in_order`, k = the block's largest R, at least min(max K, 32)). A query with
    R > 0 but no hit among them gets its first-hit rank by counting the items ordered before its
    nearest relevant item: one comparison pass over its row, not a ranking.
    """
    B, n = dist.shape
    inf_rank = torch.full((B,), INT64_MAX, dtype=torch.int64, device=dist.device)
    zeros = torch.zeros(B, dtype=torch.float64, device=dist.device)
    if n == 1:  # nobody else to rank
        return inf_rank, zeros, zeros
    local = torch.arange(B, device=dist.device)
    dist[local, rows] = float("nan")  # the query itself: excluded from every comparison below
    k = min(n - 1, max(int(others.max()), min(max_k, 32), 1))
    first, map_at_r, r_precision = _neighbour_scores(nearest_in_order(dist, k), rows, labels, others)
    found = first != INT64_MAX
    beyond = (~found & (others > 0)).nonzero().flatten()
    if beyond.numel():
        candidates, present = groups.members(labels[rows[beyond]])
        relevant = present & (candidates != rows[beyond][:, None])
        sub = dist[beyond]
        keys = torch.where(relevant, order_keys(sub.gather(1, candidates), candidates), INT64_MAX)
        nearest = candidates.gather(1, keys.argmin(1, keepdim=True))  # the nearest relevant item
        d1 = sub.gather(1, nearest)
        before = (sub < d1).sum(1) + ((sub == d1) & (torch.arange(n, device=dist.device) < nearest)).sum(1)
        first[beyond] = before + 1  # NaN (the query itself) compares false: never counted
    return first, map_at_r, r_precision
