"""Plain Python-loop references written from the protocol definitions (protocols.md), for the tests."""

from __future__ import annotations

import numpy as np
import torch

from centrum.distances import l2_normalize, pairwise_distance


def distance_matrix(q, g, metric):
    return pairwise_distance(torch.as_tensor(q), torch.as_tensor(g), metric).numpy()


def ranking_scores(dist_row, relevant, removed):
    """(first rank, AP, INP) for one query from a stable ascending ranking, or None if no match."""
    order = np.argsort(dist_row, kind="stable")
    hits = [bool(relevant[j]) for j in order if not removed[j]]
    num_relevant = sum(hits)
    if num_relevant == 0:
        return None
    found, precision_sum, first, last = 0, 0.0, None, None
    for position, hit in enumerate(hits, start=1):
        if hit:
            found += 1
            precision_sum += found / position
            first = first or position
            last = position
    return first, precision_sum / num_relevant, num_relevant / last


def reid_reference(dist, ql, gl, qc, gc, max_rank=50):
    firsts, aps, inps = [], [], []
    for i in range(dist.shape[0]):
        same = gl == ql[i]
        removed = same & (gc == qc[i])
        result = ranking_scores(dist[i], same & ~removed, removed)
        if result is None:
            continue
        firsts.append(result[0])
        aps.append(result[1])
        inps.append(result[2])
    firsts = np.array(firsts)
    out = {"mAP": float(np.mean(aps)), "mINP": float(np.mean(inps)), "num_valid_queries": len(firsts)}
    for k in (1, 5, 10, 20):
        out[f"Rank-{k}"] = float(np.mean(firsts <= k))
    out["cmc"] = [float(np.mean(firsts <= k)) for k in range(1, max_rank + 1)]
    return out


def reid_centroid_reference(q, g, ql, gl, qc, gc, metric="cosine", distractors=()):
    """Per query: one centroid per gallery identity (the query's own from other cameras), singletons."""
    q, g = torch.as_tensor(q), torch.as_tensor(g)
    if metric == "cosine":
        g = l2_normalize(g)
    labels = sorted({int(v) for v in gl if int(v) not in distractors})
    firsts, aps = [], []
    for i in range(q.shape[0]):
        entries, relevant = [], []
        for lab in labels:
            members = [j for j in range(len(gl)) if gl[j] == lab and (lab != ql[i] or gc[j] != qc[i])]
            if not members:
                continue  # only the query's own identity can lose all its images (then no match)
            entries.append(g[members].double().mean(0).float())
            relevant.append(lab == ql[i])
        removed = []
        for j in range(len(gl)):
            if int(gl[j]) in distractors:
                entries.append(g[j])
                relevant.append(gl[j] == ql[i] and gc[j] != qc[i])
                removed.append((len(entries) - 1, gl[j] == ql[i] and gc[j] == qc[i]))
        rem = np.zeros(len(entries), bool)
        for idx, flag in removed:
            rem[idx] = flag
        dist = pairwise_distance(q[i : i + 1], torch.stack(entries), metric).numpy()[0]
        result = ranking_scores(dist, np.array(relevant), rem)
        if result is None:
            continue
        firsts.append(result[0])
        aps.append(result[1])
    firsts = np.array(firsts)
    out = {"mAP": float(np.mean(aps)), "num_valid_queries": len(firsts)}
    for k in (1, 5, 10, 20):
        out[f"Rank-{k}"] = float(np.mean(firsts <= k))
    return out


def dml_reference(dist, labels, ks):
    n = len(labels)
    recalls = {k: [] for k in ks}
    maps, rprecs = [], []
    for i in range(n):
        order = [j for j in np.argsort(dist[i], kind="stable") if j != i]
        hits = [labels[j] == labels[i] for j in order]
        for k in ks:
            recalls[k].append(float(any(hits[:k])))
        r = sum(hits)
        if r == 0:
            continue
        found, total = 0, 0.0
        for position, hit in enumerate(hits[:r], start=1):
            if hit:
                found += 1
                total += found / position
        maps.append(total / r)
        rprecs.append(found / r)
    out = {f"Recall@{k}": float(np.mean(v)) for k, v in recalls.items()}
    out["MAP@R"] = float(np.mean(maps))
    out["R-Precision"] = float(np.mean(rprecs))
    return out
