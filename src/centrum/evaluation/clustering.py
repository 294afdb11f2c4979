"""Clustering quality for the metric-learning benchmarks: k-means, NMI and the pairwise F1 (protocols.md 4)."""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from centrum.evaluation._inputs import ArrayLike
from centrum.validation import as_tensor

# the size from which "auto" switches from scikit-learn to faiss k-means (when faiss is installed)
FAISS_KMEANS_FROM = 20_000


def kmeans_labels(embeddings: ArrayLike, num_clusters: int, *, seed: int = 0, backend: str = "auto") -> np.ndarray:
    """Cluster assignment (int64, one per row) of a k-means with ``num_clusters`` clusters.

    ``backend``: ``"sklearn"`` = ``sklearn.cluster.KMeans(n_init=1, random_state=seed)`` (k-means++
    initialisation, up to 300 Lloyd iterations); ``"faiss"`` = ``faiss.Kmeans(niter=20, seed=seed)``
    (random initialisation, 20 iterations: the setting of pytorch-metric-learning's FaissKMeans);
    ``"auto"`` = faiss from 20,000 rows on when it is installed, scikit-learn otherwise.
    """
    x = np.ascontiguousarray(as_tensor(embeddings, "embeddings").detach().float().cpu().numpy())
    if not 1 <= int(num_clusters) <= x.shape[0]:
        raise ValueError(
            f"num_clusters must be between 1 and the number of embeddings ({x.shape[0]}), got {num_clusters}"
        )
    if backend == "auto":
        has_faiss = importlib.util.find_spec("faiss") is not None
        backend = "faiss" if has_faiss and x.shape[0] >= FAISS_KMEANS_FROM else "sklearn"
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=int(num_clusters), n_init=1, random_state=seed).fit_predict(x).astype(np.int64)
    if backend == "faiss":
        import faiss

        km = faiss.Kmeans(x.shape[1], int(num_clusters), niter=20, seed=int(seed), verbose=False)
        km.train(x)
        return km.index.search(x, 1)[1][:, 0].astype(np.int64)
    raise ValueError(f"unknown k-means backend {backend!r}; choose 'auto', 'sklearn' or 'faiss'")


def _contingency(labels: ArrayLike, clusters: ArrayLike) -> torch.Tensor:
    a = as_tensor(labels, "labels").long().flatten().cpu()
    b = as_tensor(clusters, "clusters").long().flatten().cpu()
    if a.shape != b.shape:
        raise ValueError(f"labels has {a.shape[0]} entries but clusters has {b.shape[0]}")
    if a.numel() == 0:
        raise ValueError("labels is empty")
    _, ai = torch.unique(a, return_inverse=True)
    _, bi = torch.unique(b, return_inverse=True)
    nb = int(bi.max()) + 1
    pair = ai * nb + bi
    cells, counts = torch.unique(pair, return_counts=True)
    return torch.stack([cells // nb, cells % nb, counts], 1)  # sparse contingency (class, cluster, count)


def normalized_mutual_info(labels: ArrayLike, clusters: ArrayLike) -> float:
    """NMI = I(labels; clusters) / mean(H(labels), H(clusters)) (arithmetic mean, scikit-learn's default).

    1.0 when both partitions are a single block (as scikit-learn).
    """
    table = _contingency(labels, clusters).double()
    n = table[:, 2].sum()
    row = torch.zeros(int(table[:, 0].max()) + 1, dtype=torch.float64).index_add_(0, table[:, 0].long(), table[:, 2])
    col = torch.zeros(int(table[:, 1].max()) + 1, dtype=torch.float64).index_add_(0, table[:, 1].long(), table[:, 2])
    if row.numel() == 1 and col.numel() == 1:
        return 1.0
    p = table[:, 2] / n
    mi = (p * (torch.log(table[:, 2] * n) - torch.log(row[table[:, 0].long()] * col[table[:, 1].long()]))).sum()
    h_row = -(row / n * torch.log(row / n)).sum()
    h_col = -(col / n * torch.log(col / n)).sum()
    denom = (h_row + h_col) / 2
    return float(max(mi, 0.0) / denom) if denom > 0 else 0.0


def pairwise_f1(labels: ArrayLike, clusters: ArrayLike) -> float:
    """Pairwise F-measure of a clustering: over all pairs of items, precision = share of same-cluster
    pairs that are same-class, recall = share of same-class pairs that are same-cluster; F1 = their
    harmonic mean (0 when there is no such pair)."""
    table = _contingency(labels, clusters).double()

    def pairs(counts: torch.Tensor) -> torch.Tensor:
        return (counts * (counts - 1) / 2).sum()

    row = torch.zeros(int(table[:, 0].max()) + 1, dtype=torch.float64).index_add_(0, table[:, 0].long(), table[:, 2])
    col = torch.zeros(int(table[:, 1].max()) + 1, dtype=torch.float64).index_add_(0, table[:, 1].long(), table[:, 2])
    true_positive = pairs(table[:, 2])
    same_cluster, same_class = pairs(col), pairs(row)
    if true_positive == 0:
        return 0.0
    precision, recall = true_positive / same_cluster, true_positive / same_class
    return float(2 * precision * recall / (precision + recall))
