"""Class-disjoint metric-learning benchmarks (protocols.md 4): every test image queries all the others."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from centrum.distances import check_metric
from centrum.evaluation._inputs import ArrayLike, check_ks
from centrum.evaluation._ranking import LabelGroups, PreparedGallery, auto_chunk_size, relevant_ranks, score_queries
from centrum.evaluation.clustering import kmeans_labels, normalized_mutual_info, pairwise_f1
from centrum.validation import check_embeddings_labels

DML_RECALL_KS = (1, 2, 4, 8)
SOP_RECALL_KS = (1, 10, 100, 1000)


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
    No full ranking and no N x N matrix: queries go ``chunk_size`` at a time. Values are fractions.
    """
    ks = check_ks(recall_ks, "recall_ks")
    check_metric(metric)
    e, lab = check_embeddings_labels(embeddings, labels)
    prepared = PreparedGallery(e, metric)
    groups = LabelGroups(lab)
    n = e.shape[0]
    step = auto_chunk_size(n, n, chunk_size)
    firsts, nrel, maps, rprec = [], [], [], []
    for start in range(0, n, step):
        rows = torch.arange(start, min(start + step, n), device=e.device)
        dist = prepared.distances(prepared.vectors[rows])
        candidates, present = groups.members(lab[rows])
        is_self = candidates == rows[:, None]
        ranks, num_relevant = relevant_ranks(dist, candidates, present & ~is_self, present & is_self)
        scores = score_queries(ranks, num_relevant, at_r=True)
        firsts.append(scores.first_rank)
        nrel.append(num_relevant)
        maps.append(scores.map_at_r)
        rprec.append(scores.r_precision)
    first, num_relevant = torch.cat(firsts), torch.cat(nrel)
    valid = num_relevant > 0
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
