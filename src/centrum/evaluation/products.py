"""Query / gallery product retrieval (protocols.md 3): Acc@k and mAP, per image or against item centroids."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from centrum.evaluation._inputs import ArrayLike, check_ks, check_query_gallery
from centrum.evaluation._ranking import LabelGroups, PreparedGallery, auto_chunk_size, relevant_ranks, score_queries

PRODUCT_KS = (1, 10, 20, 30, 50)


def item_centroids(
    embeddings: torch.Tensor, labels: torch.Tensor, normalize: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """One centroid per label: the mean of its embeddings (of the L2-normalised ones if ``normalize``).

    Returns ``(centroids, unique_labels)`` with the labels ascending. Sums are accumulated in float64.
    """
    source = torch.nn.functional.normalize(embeddings.float(), dim=1) if normalize else embeddings.float()
    unique, inverse = torch.unique(labels, return_inverse=True)
    sums = torch.zeros(unique.shape[0], embeddings.shape[1], dtype=torch.float64, device=embeddings.device)
    sums.index_add_(0, inverse, source.double())
    counts = torch.bincount(inverse, minlength=unique.shape[0]).double()
    return (sums / counts[:, None]).float(), unique


def product_metrics(
    query: ArrayLike,
    gallery: ArrayLike,
    query_labels: ArrayLike,
    gallery_labels: ArrayLike,
    *,
    centroids: bool = False,
    ks: Sequence[int] = PRODUCT_KS,
    metric: str = "cosine",
    chunk_size: int | None = None,
) -> dict:
    """Consumer-to-shop style retrieval metrics: relevant = gallery items with the query's item id.

    Returns ``{"Acc@k" for k in ks, "mAP", "num_valid_queries", "num_queries", "num_gallery_entries"}``:
    Acc@k = share of queries with a relevant item within the top k; mAP = mean non-interpolated AP.
    No camera filtering; queries whose item is absent from the gallery are skipped (not counted).
    With ``centroids=True`` the gallery is replaced by one centroid per item id (the mean of its
    embeddings, L2-normalised first for the cosine metric); mAP is then the mean reciprocal rank.
    Ties are broken by gallery order (centroids: by ascending item id). Values are fractions.
    """
    ks = check_ks(ks, "ks")
    q, g, ql, gl = check_query_gallery(query, gallery, query_labels, gallery_labels, metric)
    if centroids:
        g, gl = item_centroids(g, gl, normalize=metric == "cosine")
    prepared = PreparedGallery(g, metric)
    groups = LabelGroups(gl)
    step = auto_chunk_size(q.shape[0], g.shape[0], chunk_size)
    firsts, aps, nrel = [], [], []
    for start in range(0, q.shape[0], step):
        rows = slice(start, start + step)
        dist = prepared.distances(prepared.prepare_queries(q[rows]))
        candidates, present = groups.members(ql[rows])
        ranks, num_relevant = relevant_ranks(dist, candidates, present, torch.zeros_like(present))
        scores = score_queries(ranks, num_relevant)
        firsts.append(scores.first_rank)
        aps.append(scores.average_precision)
        nrel.append(num_relevant)
    first, ap, num_relevant = torch.cat(firsts), torch.cat(aps), torch.cat(nrel)
    valid = num_relevant > 0
    if not bool(valid.any()):
        raise ValueError("products: no valid query: no query item id appears in gallery_labels")
    metrics: dict = {f"Acc@{k}": float((first[valid] <= k).double().mean()) for k in ks}
    metrics["mAP"] = float(ap[valid].mean())
    metrics["num_valid_queries"] = int(valid.sum())
    metrics["num_queries"] = int(q.shape[0])
    metrics["num_gallery_entries"] = int(g.shape[0])
    return metrics
