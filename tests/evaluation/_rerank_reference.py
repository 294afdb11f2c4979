"""Dense references for the post-processing tests, written from the definitions (float64, plain loops).

``dense_k_reciprocal`` follows the widely copied ``re_ranking`` (Zhong et al. 2017, the authors' code and
torchreid's rerank.py) line by line on the full (Q + G) x (Q + G) matrices, with two rules made explicit:
neighbours are ordered by (distance, index) and the 2/3 test is strict.
"""

from __future__ import annotations

import numpy as np


def dense_k_reciprocal(q, g, k1=20, k2=6, lambda_value=0.3, normalize=False):
    x = np.concatenate([np.asarray(q, np.float64), np.asarray(g, np.float64)])
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    num_query, all_num = len(q), len(x)
    dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)  # squared Euclidean, as the reference
    col_max = dist.max(axis=0)
    original = np.transpose(np.where(col_max > 0, dist / np.where(col_max > 0, col_max, 1.0), 0.0))
    initial_rank = np.argsort(dist, axis=1, kind="stable")  # (distance, index) order
    V = np.zeros_like(original)

    def reciprocal(i, k):
        forward = initial_rank[i, : k + 1]
        return [int(j) for j in forward if i in initial_rank[j, : k + 1]]

    half = int(np.around(k1 / 2.0))
    for i in range(all_num):
        k_reciprocal = reciprocal(i, k1)
        expansion = list(k_reciprocal)
        for candidate in k_reciprocal:
            candidate_set = reciprocal(candidate, half)
            shared = len(set(candidate_set) & set(k_reciprocal))
            if 3 * shared > 2 * len(candidate_set):
                expansion.extend(candidate_set)
        expansion = np.unique(np.array(expansion, dtype=np.int64))
        if expansion.size:
            weight = np.exp(-original[i, expansion])
            V[i, expansion] = weight / weight.sum()
    if k2 != 1:
        V = np.stack([V[initial_rank[i, :k2]].mean(0) for i in range(all_num)])
    jaccard = np.ones((num_query, all_num))
    for i in range(num_query):
        for j in range(all_num):
            shared = np.minimum(V[i], V[j]).sum()
            jaccard[i, j] = 1.0 - shared / (2.0 - shared)
    final = jaccard * (1 - lambda_value) + original[:num_query] * lambda_value
    return final[:, num_query:]


def dense_expansion(targets, database, k, alpha, exclude_self=False):
    """Each target replaced by the normalised sum of itself and its k nearest database rows (cosine), weighted
    by similarity ** alpha (negative similarities count as 0), ties by index."""
    t = np.asarray(targets, np.float64)
    d = np.asarray(database, np.float64)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    out = []
    for i, row in enumerate(t):
        sims = d @ row
        order = [j for j in np.lexsort((np.arange(len(d)), -sims)) if not (exclude_self and j == i)][:k]
        total = row.copy()
        for j in order:
            total += np.maximum(sims[j], 0.0) ** alpha * d[j]
        out.append(total / np.linalg.norm(total))
    return np.stack(out)
