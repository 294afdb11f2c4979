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
from centrum.evaluation.clustering import kmeans_labels, normalized_mutual_info, pairwise_f1
from centrum.validation import check_embeddings_labels

DML_RECALL_KS = (1, 2, 4, 8)
SOP_RECALL_KS = (1, 10, 100, 1000)
# query x item pairs per block (128 MB of float32 distances): the N x N product runs near full speed
DML_CHUNK_ELEMENTS = 1 << 25


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
    step = auto_chunk_size(n, n, chunk_size, DML_CHUNK_ELEMENTS)
    firsts, maps, rprec = [], [], []
    for start in range(0, n, step):
        rows = torch.arange(start, min(start + step, n), device=e.device)
        dist = prepared.distances(prepared.vectors[rows])
        with serial_on_cpu(dist.device):
            first, map_at_r, r_precision = _chunk_scores(dist, rows, lab, others[rows], groups, ks[-1])
        firsts.append(first)
        maps.append(map_at_r)
        rprec.append(r_precision)
    first = torch.cat(firsts)
    valid = others > 0
    metrics: dict = {f"Recall@{k}": float((first <= k).double().mean()) for k in ks}
    if bool(valid.any()):
        metrics["MAP@R"] = float(torch.cat(maps)[valid].mean())
        metrics["R-Precision"] = float(torch.cat(rprec)[valid].mean())
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
    neighbours = nearest_in_order(dist, k)
    hits = labels[neighbours] == labels[rows][:, None]
    position = torch.arange(1, k + 1, device=dist.device, dtype=torch.float64)
    r = others.double()
    safe_r = r.clamp_min(1.0)
    within_r = hits & (position[None, :] <= r[:, None])
    precision = hits.cumsum(1).double() / position[None, :]
    map_at_r = torch.where(within_r, precision, 0.0).sum(1) / safe_r
    r_precision = within_r.sum(1).double() / safe_r
    found = hits.any(1)
    first = torch.where(found, hits.to(torch.uint8).argmax(1) + 1, inf_rank)
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
