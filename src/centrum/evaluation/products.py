"""Query / gallery product retrieval (protocols.md 3): Acc@k and mAP, per image or against item centroids."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from centrum.evaluation._inputs import ArrayLike, check_ks, check_query_gallery, query_gallery_blocks
from centrum.evaluation._ranking import (
    CHUNK_ELEMENTS,
    DistanceBlocks,
    LabelGroups,
    auto_chunk_size,
    score_queries,
    serial_on_cpu,
)

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
    query: ArrayLike | None = None,
    gallery: ArrayLike | None = None,
    query_labels: ArrayLike | None = None,
    gallery_labels: ArrayLike | None = None,
    *,
    distances: ArrayLike | None = None,
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

    ``distances``: instead of ``query`` and ``gallery``, a precomputed Q x G distance matrix (smaller =
    closer; per-image protocol only: centroids need the embeddings; ``metric`` is then ignored).
    """
    ks = check_ks(ks, "ks")
    if centroids:
        if distances is not None:
            raise ValueError(
                "products-centroids needs query and gallery embeddings: a distance matrix cannot be averaged "
                "into item centroids (use centroids=False with distances)"
            )
        q, g, ql, gl = check_query_gallery(query, gallery, query_labels, gallery_labels, metric)
        g, gl = item_centroids(g, gl, normalize=metric == "cosine")
        blocks = DistanceBlocks.from_embeddings(q, g, metric)
    else:
        blocks, ql, gl = query_gallery_blocks(query, gallery, query_labels, gallery_labels, distances, metric)
    num_query, num_gallery = blocks.shape
    groups = LabelGroups(gl)
    # lazily computed distances (re-ranking) may ask for smaller blocks: theirs hold several B x G temporaries
    step = auto_chunk_size(num_query, num_gallery, chunk_size, getattr(blocks, "chunk_elements", CHUNK_ELEMENTS))
    firsts, aps, nrel = [], [], []
    for start in range(0, num_query, step):
        rows = slice(start, start + step)
        dist = blocks.block(rows)
        candidates, present = groups.members(ql[rows])
        with serial_on_cpu(dist.device):
            ranks, num_relevant = blocks.ranks(dist, candidates, present, torch.zeros_like(present))
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
    metrics["num_queries"] = num_query
    metrics["num_gallery_entries"] = num_gallery
    return metrics
