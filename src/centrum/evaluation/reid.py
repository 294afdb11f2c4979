"""Person re-identification protocols: the standard per-image one and the honest centroid one.

Both follow protocols.md sections 1 and 2: rank the gallery by ascending distance (ties broken by
gallery order), drop the gallery images with the query's identity **and** camera, skip queries left
without a match, and report mAP, CMC (Rank-k and the curve), mINP and the number of valid queries.
Values are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from centrum.evaluation._inputs import ArrayLike, check_cameras, check_query_gallery, query_gallery_blocks
from centrum.evaluation._ranking import (
    CHUNK_ELEMENTS,
    LabelGroups,
    PreparedGallery,
    auto_chunk_size,
    relevant_ranks,
    score_queries,
    serial_on_cpu,
)

REID_RANKS = (1, 5, 10, 20)


def _no_valid_query_error(protocol: str, has_cameras: bool) -> ValueError:
    if has_cameras:
        return ValueError(
            f"{protocol}: no valid query: every query's identity is missing from the gallery or appears there only "
            "in the query's own camera, and same-identity same-camera images are excluded by the protocol. Query "
            "and gallery share cameras (e.g. the gallery contains the queries, or all images carry one camera id); "
            "give the true camera ids or use the 'products' protocol, which does not filter cameras"
        )
    return ValueError(f"{protocol}: no valid query: no query identity appears in gallery_labels")


def _summarize(
    first_rank: torch.Tensor,
    ap: torch.Tensor,
    inp: torch.Tensor,
    num_relevant: torch.Tensor,
    max_rank: int,
    protocol: str,
    has_cameras: bool,
) -> dict:
    valid = num_relevant > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise _no_valid_query_error(protocol, has_cameras)
    first = first_rank[valid]
    cmc = (first[:, None] <= torch.arange(1, max_rank + 1, device=first.device)[None, :]).double().mean(0)
    metrics: dict = {"mAP": float(ap[valid].mean()), "mINP": float(inp[valid].mean())}
    for k in REID_RANKS:
        metrics[f"Rank-{k}"] = float((first <= k).double().mean())
    metrics["cmc"] = [float(v) for v in cmc.cpu()]
    metrics["num_valid_queries"] = num_valid
    metrics["num_queries"] = int(first_rank.shape[0])
    return metrics


def _check_max_rank(max_rank: int) -> int:
    if int(max_rank) < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank}")
    return int(max_rank)


def reid_metrics(
    query: ArrayLike | None = None,
    gallery: ArrayLike | None = None,
    query_labels: ArrayLike | None = None,
    gallery_labels: ArrayLike | None = None,
    query_cameras: ArrayLike | None = None,
    gallery_cameras: ArrayLike | None = None,
    *,
    distances: ArrayLike | None = None,
    metric: str = "cosine",
    max_rank: int = 50,
    chunk_size: int | None = None,
) -> dict:
    """Standard per-image re-identification metrics (protocols.md 1) of query vs gallery embeddings.

    For each query, gallery images with its identity and its camera are removed from the ranking (they
    count neither as hits nor as misses); a query with no remaining match is skipped. Returns
    ``{"mAP", "mINP", "Rank-1", "Rank-5", "Rank-10", "Rank-20", "cmc", "num_valid_queries", "num_queries"}``:
    AP is non-interpolated, INP = (number of matches) / (rank of the last match), ``cmc`` the hit rate
    within the top k for k = 1..max_rank; all fractions, averaged over valid queries.

    ``metric``: ``"cosine"`` (default; the same ranking as the protocol's Euclidean distance on
    L2-normalised features), ``"euclidean"``, ``"squared_euclidean"`` or ``"dot"`` on the raw features.
    Cameras ``None`` (both) disables the camera filter. Queries are processed ``chunk_size`` at a time
    (default: a block of about 16M query-gallery pairs), so memory does not grow with the query count.

    ``distances``: instead of ``query`` and ``gallery``, a precomputed Q x G distance matrix (smaller =
    closer; e.g. re-ranked distances), as the widely copied ``eval_market1501`` takes; ``metric`` is then
    ignored. float32 matrices (and float64 ones that float32 holds exactly) are ranked on fast 64-bit keys,
    other float64 matrices by a stable sort of their float64 values. Raises ``ValueError`` when no query
    is valid, saying why.
    """
    max_rank = _check_max_rank(max_rank)
    blocks, ql, gl = query_gallery_blocks(query, gallery, query_labels, gallery_labels, distances, metric)
    num_query, num_gallery = blocks.shape
    qc, gc = check_cameras(query_cameras, gallery_cameras, num_query, num_gallery, ql.device)
    groups = LabelGroups(gl)
    # lazily computed distances (re-ranking) may ask for smaller blocks: theirs hold several B x G temporaries
    step = auto_chunk_size(num_query, num_gallery, chunk_size, getattr(blocks, "chunk_elements", CHUNK_ELEMENTS))
    firsts, aps, inps, nrel = [], [], [], []
    for start in range(0, num_query, step):
        rows = slice(start, start + step)
        dist = blocks.block(rows)
        candidates, present = groups.members(ql[rows])
        same_camera = torch.zeros_like(present) if qc is None else gc[candidates] == qc[rows][:, None]
        with serial_on_cpu(dist.device):
            ranks, num_relevant = blocks.ranks(dist, candidates, present & ~same_camera, present & same_camera)
            scores = score_queries(ranks, num_relevant)
        firsts.append(scores.first_rank)
        aps.append(scores.average_precision)
        inps.append(scores.inverse_negative_penalty)
        nrel.append(num_relevant)
    return _summarize(
        torch.cat(firsts), torch.cat(aps), torch.cat(inps), torch.cat(nrel), max_rank, "reid", qc is not None
    )


def reid_centroid_metrics(
    query: ArrayLike,
    gallery: ArrayLike,
    query_labels: ArrayLike,
    gallery_labels: ArrayLike,
    query_cameras: ArrayLike | None = None,
    gallery_cameras: ArrayLike | None = None,
    *,
    metric: str = "cosine",
    max_rank: int = 50,
    chunk_size: int | None = None,
    distractor_labels: Sequence[int] = (),
    distances: ArrayLike | None = None,
) -> dict:
    """Re-identification metrics against gallery identity centroids (protocols.md 2), done right.

    Every gallery identity, including identities absent from the queries, becomes one centroid: the
    mean of its gallery embeddings (L2-normalised first when ``metric="cosine"``). For each query, the
    centroid of its own identity is rebuilt from that identity's gallery images taken by **other**
    cameras only; a query whose identity has no such image is skipped. Images whose label is in
    ``distractor_labels`` (Market-1501 / DukeMTMC-reID: ``(0,)``) are not averaged: each stays a
    singleton gallery entry, kept as a negative. Entries are ranked in the order centroids by ascending
    label, then singletons in gallery order (this order breaks distance ties).

    Same arguments and keys as :func:`reid_metrics`, plus ``"num_centroids"`` and ``"num_gallery_entries"``.
    With one relevant centroid per query, mAP equals the mean reciprocal rank. This protocol uses the
    gallery labels to build centroids: report it beside :func:`reid_metrics`, never instead of it.
    It needs the embeddings: ``distances`` (accepted for a clear error) cannot be averaged into centroids.
    """
    if distances is not None:
        raise ValueError(
            "reid-centroids needs query and gallery embeddings: a distance matrix cannot be averaged into "
            "identity centroids (use reid_metrics(distances=...) for the per-image protocol)"
        )
    max_rank = _check_max_rank(max_rank)
    q, g, ql, gl = check_query_gallery(query, gallery, query_labels, gallery_labels, metric)
    qc, gc = check_cameras(query_cameras, gallery_cameras, q.shape[0], g.shape[0], q.device)
    if gc is None:
        gc = torch.zeros_like(gl)
        qc = torch.ones_like(ql)
        has_cameras = False
    else:
        has_cameras = True
    device = q.device
    source = PreparedGallery(g, metric).vectors  # L2-normalised for cosine: centroids average unit vectors
    distractor = torch.isin(gl, torch.as_tensor(list(distractor_labels), dtype=torch.long, device=device))
    averaged = ~distractor

    centroid_labels, inverse = torch.unique(gl[averaged], return_inverse=True)
    num_centroids = int(centroid_labels.shape[0])
    label_sums = torch.zeros(num_centroids, g.shape[1], dtype=torch.float64, device=device)
    averaged64 = source[averaged].double()  # one float64 copy, for both sums
    label_sums.index_add_(0, inverse, averaged64)
    label_counts = torch.bincount(inverse, minlength=num_centroids)
    # per (identity, camera) sums, to subtract the query camera's images from the positive centroid
    pair_keys, pair_inverse = torch.unique(torch.stack([gl[averaged], gc[averaged]], 1), dim=0, return_inverse=True)
    pair_sums = torch.zeros(pair_keys.shape[0], g.shape[1], dtype=torch.float64, device=device)
    pair_sums.index_add_(0, pair_inverse, averaged64)
    del averaged64
    pair_counts = torch.bincount(pair_inverse, minlength=pair_keys.shape[0])

    singletons = distractor.nonzero().flatten()
    entries = torch.cat([(label_sums / label_counts.clamp_min(1)[:, None].double()).float(), source[singletons]])
    entry_labels = torch.cat([centroid_labels, gl[singletons]])
    entry_cameras = torch.cat([torch.zeros_like(centroid_labels), gc[singletons]])
    is_centroid = torch.arange(entries.shape[0], device=device) < num_centroids
    prepared = PreparedGallery(entries, metric)
    groups = LabelGroups(entry_labels)

    # for queries of an averaged identity: the cross-camera sum and count of their identity
    q_centroid = torch.searchsorted(centroid_labels, ql).clamp_max(max(num_centroids - 1, 0))
    q_has_centroid = (centroid_labels[q_centroid] == ql) if num_centroids else torch.zeros_like(ql, dtype=torch.bool)
    q_pair = _find_rows(pair_keys, torch.stack([ql, qc], 1))
    own_camera_counts = torch.where(q_pair >= 0, pair_counts[q_pair.clamp_min(0)], 0) if len(pair_counts) else ql * 0
    own_label_counts = torch.where(q_has_centroid, label_counts[q_centroid], 0) if num_centroids else ql * 0

    step = auto_chunk_size(q.shape[0], entries.shape[0], chunk_size)
    firsts, aps, inps, nrel = [], [], [], []
    for start in range(0, q.shape[0], step):
        rows = slice(start, start + step)
        queries = prepared.prepare_queries(q[rows])
        dist = prepared.distances(queries)
        has_centroid = q_has_centroid[rows]
        cross_counts = own_label_counts[rows] - own_camera_counts[rows]
        usable = has_centroid & (cross_counts > 0)
        if bool(usable.any()):
            idx = usable.nonzero().flatten()
            sums = label_sums[q_centroid[rows][idx]]
            pair_rows = q_pair[rows][idx]
            own = torch.where((pair_rows >= 0)[:, None], pair_sums[pair_rows.clamp_min(0)], 0.0)
            positive = ((sums - own) / cross_counts[idx][:, None].double()).float()
            dist[idx, q_centroid[rows][idx]] = prepared.rowwise_distances(queries[idx], positive)
        candidates, present = groups.members(ql[rows])
        cand_is_centroid = is_centroid[candidates]
        same_camera = (entry_cameras[candidates] == qc[rows][:, None]) & ~cand_is_centroid
        relevant = present & torch.where(cand_is_centroid, usable[:, None], ~same_camera)
        with serial_on_cpu(dist.device):
            ranks, num_relevant = relevant_ranks(dist, candidates, relevant, present & ~relevant)
            scores = score_queries(ranks, num_relevant)
        firsts.append(scores.first_rank)
        aps.append(scores.average_precision)
        inps.append(scores.inverse_negative_penalty)
        nrel.append(num_relevant)
    metrics = _summarize(
        torch.cat(firsts), torch.cat(aps), torch.cat(inps), torch.cat(nrel), max_rank, "reid-centroids", has_cameras
    )
    metrics["num_centroids"] = num_centroids
    metrics["num_gallery_entries"] = int(entries.shape[0])
    return metrics


def _find_rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Index of each row of ``rows`` (N x 2) in the lexicographically sorted unique ``table``, or -1."""
    if table.shape[0] == 0:
        return torch.full((rows.shape[0],), -1, dtype=torch.long, device=rows.device)
    # combine both columns into one sortable key: rank of the first column, then the second
    all_rows = torch.cat([table, rows])
    _, inv = torch.unique(all_rows, dim=0, return_inverse=True)
    table_ids, row_ids = inv[: table.shape[0]], inv[table.shape[0] :]
    lookup = torch.full((int(inv.max()) + 1,), -1, dtype=torch.long, device=rows.device)
    lookup[table_ids] = torch.arange(table.shape[0], device=rows.device)
    return lookup[row_ids]
