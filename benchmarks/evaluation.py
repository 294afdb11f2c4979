"""Evaluation and index benchmarks: ours vs the reference implementations, side by side in one run.

    python benchmarks/evaluation.py                 # all three parts at full size
    python benchmarks/evaluation.py --part market   # one part; --scale 0.25 for a quicker, smaller run
    python benchmarks/evaluation.py --quick         # every part at --scale 0.1

Parts:
- market: Market-1501 size (3,368 queries, 15,913 gallery, 2,048-d, 751 ids, 6 cameras): our standard
  and centroid re-id protocols vs a NumPy per-query loop (the widely copied ``eval_market1501`` of the
  strong-baseline / torchreid code, full distance matrix then argsort). The standard protocol twice:
  from embeddings (both sides compute the distance matrix, same float32 formula) and from the same
  precomputed distance matrix (given to both sides).
- rerank: Market-1501 size k-reciprocal re-ranking (k1 20, k2 6, lambda 0.3) and the re-ranked standard
  protocol: ours (sparse, exact) vs the widely copied dense ``re_ranking`` (reid-strong-baseline / torchreid),
  time, peak memory and mAP;
- msmt: MSMT17 size (11,659 + 82,161, 2,048-d, synthetic): our re-ranked evaluation alone (the dense one
  needs several 33 GB matrices: not runnable here);
- sop: Stanford Online Products size (60,502 x 512, 11,316 classes): Recall@1/10/100/1000, MAP@R,
  NMI, F1 vs pytorch-metric-learning's AccuracyCalculator (same faiss k-means on both sides). The k-NN
  metrics and the clustering metrics are timed as two calls per side; "all metrics" is their sum.
- index: 1,000,000 gallery embeddings in 100,000 classes, 512-d: search time and memory of the centroid
  index vs the per-image index (exact torch search on both).
Memory is the peak resident memory above the level before the timed call, sampled every 2 ms.
Embeddings are synthetic (class centres plus noise, L2-normalised); timings are wall-clock on this
machine's threads (torch.get_num_threads()).
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import torch

from centrum.evaluation import dml_metrics, reid_centroid_metrics, reid_metrics
from centrum.retrieval import CentroidIndex, EmbeddingIndex


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(fn):
    """(result, seconds, peak extra resident bytes) of ``fn()``."""
    base = _rss()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    return result, seconds, max(peak[0], _rss()) - base


def clustered(n_ids, counts, dim, noise, gen):
    centres = torch.randn(n_ids, dim, generator=gen)
    labels = torch.repeat_interleave(torch.arange(n_ids), counts)
    x = centres[labels] + noise * torch.randn(labels.shape[0], dim, generator=gen)
    return torch.nn.functional.normalize(x, dim=1), labels


def row(name, ours, theirs):
    (t1, m1), (t2, m2) = ours, theirs
    memory = f"{m2 / m1:5.1f}x" if m1 >= 2**20 else "n/a (ours < 1 MB)"
    print(
        f"  {name:<35} ours {t1:8.2f} s {m1 / 2**20:8.0f} MB | reference {t2:8.2f} s {m2 / 2**20:8.0f} MB"
        f" | speed-up {t2 / t1:6.1f}x, memory {memory}"
    )


# --- Market-1501 ----------------------------------------------------------------------------------
def strong_baseline_distmat(qf, gf):
    """The strong-baseline distance computation: full squared-norm expansion, Euclidean squared."""
    m, n = qf.shape[0], gf.shape[0]
    distmat = (
        torch.pow(qf, 2).sum(dim=1, keepdim=True).expand(m, n)
        + torch.pow(gf, 2).sum(dim=1, keepdim=True).expand(n, m).t()
    )
    distmat.addmm_(qf, gf.t(), beta=1, alpha=-2)
    return distmat.numpy()


def eval_market1501(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """The widely copied NumPy evaluation (strong-baseline / torchreid), with mINP as in AGW."""
    num_q = distmat.shape[0]
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_AP, all_INP = [], [], []
    num_valid_q = 0.0
    for q_idx in range(num_q):
        q_pid, q_camid = q_pids[q_idx], q_camids[q_idx]
        order = indices[q_idx]
        remove = (g_pids[order] == q_pid) & (g_camids[order] == q_camid)
        keep = np.invert(remove)
        orig_cmc = matches[q_idx][keep]
        if not np.any(orig_cmc):
            continue
        cmc = orig_cmc.cumsum()
        pos_idx = np.where(orig_cmc == 1)
        max_pos_idx = np.max(pos_idx)
        all_INP.append(cmc[max_pos_idx] / (max_pos_idx + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        num_valid_q += 1.0
        num_rel = orig_cmc.sum()
        tmp_cmc = orig_cmc.cumsum()
        tmp_cmc = [x / (i + 1.0) for i, x in enumerate(tmp_cmc)]
        tmp_cmc = np.asarray(tmp_cmc) * orig_cmc
        all_AP.append(tmp_cmc.sum() / num_rel)
    all_cmc = np.asarray(all_cmc).astype(np.float32).sum(0) / num_valid_q
    return all_cmc, float(np.mean(all_AP)), float(np.mean(all_INP))


def centroid_loop_reference(qf, gf, q_pids, g_pids, q_camids, g_camids, distractor=0, max_rank=50):
    """Per-query NumPy loop of the centroid protocol: cross-camera positive centroid, every identity
    kept, distractor images as singletons (the same choices as ours)."""
    qf, gf = qf.numpy().astype(np.float64), gf.numpy().astype(np.float64)
    ids = np.unique(g_pids[g_pids != distractor])
    means = np.stack([gf[g_pids == i].mean(0) for i in ids])
    single = gf[g_pids == distractor]
    entries = np.concatenate([means, single])
    entries = entries / np.linalg.norm(entries, axis=1, keepdims=True)
    base = 1.0 - qf @ entries.T  # cosine distance (queries are unit vectors)
    all_cmc, all_AP = [], []
    column_of = {int(i): c for c, i in enumerate(ids)}
    for q in range(qf.shape[0]):
        members = (g_pids == q_pids[q]) & (g_camids != q_camids[q])
        if not members.any():
            continue
        positive = gf[members].mean(0)
        dist = base[q].copy()
        col = column_of[int(q_pids[q])]
        dist[col] = 1.0 - qf[q] @ positive / np.linalg.norm(positive)
        rank = int((dist < dist[col]).sum()) + 1
        cmc = np.zeros(max_rank)
        cmc[rank - 1 :] = 1
        all_cmc.append(cmc)
        all_AP.append(1.0 / rank)
    return np.mean(all_cmc, 0), float(np.mean(all_AP))


def bench_market(scale: float) -> None:
    gen = torch.Generator().manual_seed(0)
    nq, ng, dim, n_ids, n_distractors = (
        int(3368 * scale),
        int(15913 * scale),
        2048,
        max(int(751 * scale), 2),
        int(2793 * scale),
    )
    q_ids = torch.randint(1, n_ids + 1, (nq,), generator=gen)
    g_ids = torch.cat(
        [
            torch.randint(1, n_ids + 1, (ng - n_distractors,), generator=gen),
            torch.zeros(n_distractors, dtype=torch.long),
        ]
    )
    centres = torch.randn(n_ids + 1, dim, generator=gen)
    qf = torch.nn.functional.normalize(centres[q_ids] + 3.0 * torch.randn(nq, dim, generator=gen), dim=1)
    gf = centres[g_ids] + 3.0 * torch.randn(ng, dim, generator=gen)
    gf[g_ids == 0] = torch.randn(n_distractors, dim, generator=gen)
    gf = torch.nn.functional.normalize(gf, dim=1)
    qc, gc = torch.randint(1, 7, (nq,), generator=gen), torch.randint(1, 7, (ng,), generator=gen)
    print(
        f"Market-1501 size: {nq} queries, {ng} gallery ({n_distractors} distractors), {dim}-d, {n_ids} ids, 6 cameras"
    )
    qp, gp, qcn, gcn = q_ids.numpy(), g_ids.numpy(), qc.numpy(), gc.numpy()

    def values(ours, ref):
        cmc, mAP, mINP = ref
        diff = max(abs(ours["mAP"] - mAP), abs(ours["mINP"] - mINP), float(np.abs(np.array(ours["cmc"]) - cmc).max()))
        print(
            f"  values: ours mAP {ours['mAP']:.6f} Rank-1 {ours['Rank-1']:.6f} mINP {ours['mINP']:.6f} | reference "
            f"mAP {mAP:.6f} Rank-1 {cmc[0]:.6f} mINP {mINP:.6f} | max |diff| over mAP, mINP, CMC(50): {diff:.2e}"
        )

    # 1. from embeddings: both sides compute the 3,368 x 15,913 distance matrix (the same float32 formula)
    ours, t1, m1 = measure(lambda: reid_metrics(qf, gf, q_ids, g_ids, qc, gc, metric="squared_euclidean"))
    ref, t2, m2 = measure(lambda: eval_market1501(strong_baseline_distmat(qf, gf), qp, gp, qcn, gcn))
    values(ours, ref)
    row("standard protocol (from embeddings)", (t1, m1), (t2, m2))
    loop_seconds = t2
    # 2. from the same precomputed distance matrix (float32 NumPy), given to both sides
    distmat = strong_baseline_distmat(qf, gf)
    ours, t1, m1 = measure(lambda: reid_metrics(None, None, q_ids, g_ids, qc, gc, distances=distmat))
    ref, t2, m2 = measure(lambda: eval_market1501(distmat, qp, gp, qcn, gcn))
    values(ours, ref)
    row("standard protocol (from distances)", (t1, m1), (t2, m2))
    ours_c, t1, m1 = measure(lambda: reid_centroid_metrics(qf, gf, q_ids, g_ids, qc, gc, distractor_labels=(0,)))
    (cmc_c, mAP_c), t2, m2 = measure(lambda: centroid_loop_reference(qf, gf, qp, gp, qcn, gcn))
    print(
        f"  values: ours mAP {ours_c['mAP']:.6f} Rank-1 {ours_c['Rank-1']:.6f} | reference mAP {mAP_c:.6f} "
        f"Rank-1 {cmc_c[0]:.6f} | max |diff| over mAP, CMC(50): "
        f"{max(abs(ours_c['mAP'] - mAP_c), float(np.abs(np.array(ours_c['cmc']) - cmc_c).max())):.2e}"
    )
    row("centroid protocol (from embeddings)", (t1, m1), (t2, m2))
    print(
        f"  centroid protocol vs the standard NumPy loop from embeddings ({loop_seconds:.2f} s): "
        f"{loop_seconds / t1:.1f}x faster"
    )


# --- k-reciprocal re-ranking ----------------------------------------------------------------------
def dense_re_ranking(qf, gf, k1=20, k2=6, lambda_value=0.3):
    """The widely copied dense ``re_ranking`` (reid-strong-baseline / torchreid, Zhong et al. 2017): the full
    (Q+G) x (Q+G) squared Euclidean matrix divided by its column max, dense V, dense query expansion and
    an inverted index of V's columns. Our tie rule (stable argsort) and the strict 2/3 test, as the code."""
    feat = torch.cat([qf, gf])
    query_num = all_num = feat.shape[0]
    query_num = qf.shape[0]
    sq = (feat * feat).sum(1, keepdim=True)
    original_dist = (sq + sq.T).addmm_(feat, feat.T, alpha=-2.0).clamp_min_(0.0).numpy()
    gallery_num = original_dist.shape[0]
    original_dist = np.transpose(original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist, axis=1, kind="stable").astype(np.int32)
    for i in range(all_num):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        k_reciprocal = forward[np.where(backward == i)[0]]
        expansion = k_reciprocal
        for candidate in k_reciprocal:
            c_forward = initial_rank[candidate, : int(np.around(k1 / 2.0)) + 1]
            c_backward = initial_rank[c_forward, : int(np.around(k1 / 2.0)) + 1]
            c_reciprocal = c_forward[np.where(c_backward == candidate)[0]]
            if len(np.intersect1d(c_reciprocal, k_reciprocal)) > 2.0 / 3 * len(c_reciprocal):
                expansion = np.append(expansion, c_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original_dist[i, expansion])
        V[i, expansion] = weight / np.sum(weight)
    original_dist = original_dist[:query_num,]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
        del V_qe
    del initial_rank
    inv_index = [np.where(V[:, i] != 0)[0] for i in range(gallery_num)]
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, gallery_num], dtype=np.float32)
        non_zero = np.where(V[i, :] != 0)[0]
        for j in non_zero:
            temp_min[0, inv_index[j]] += np.minimum(V[i, j], V[inv_index[j], j])
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    del original_dist, V, jaccard_dist
    return final_dist[:query_num, query_num:]


def reid_sets(nq, ng, dim, n_ids, n_distractors, gen, noise=4.0):
    """Synthetic re-id embeddings: identity centres plus noise, distractors pure noise, 6 cameras."""
    q_ids = torch.randint(1, n_ids + 1, (nq,), generator=gen)
    g_ids = torch.cat(
        [
            torch.randint(1, n_ids + 1, (ng - n_distractors,), generator=gen),
            torch.zeros(n_distractors, dtype=torch.long),
        ]
    )
    centres = torch.randn(n_ids + 1, dim, generator=gen)
    qf = torch.nn.functional.normalize(centres[q_ids] + noise * torch.randn(nq, dim, generator=gen), dim=1)
    gf = centres[g_ids] + noise * torch.randn(ng, dim, generator=gen)
    gf[g_ids == 0] = torch.randn(n_distractors, dim, generator=gen)
    gf = torch.nn.functional.normalize(gf, dim=1)
    qc, gc = torch.randint(1, 7, (nq,), generator=gen), torch.randint(1, 7, (ng,), generator=gen)
    return qf, gf, q_ids, g_ids, qc, gc


def bench_rerank(scale: float) -> None:
    from centrum.evaluation import k_reciprocal_distances

    gen = torch.Generator().manual_seed(3)
    nq, ng, dim = int(3368 * scale), int(15913 * scale), 2048
    qf, gf, q_ids, g_ids, qc, gc = reid_sets(nq, ng, dim, max(int(751 * scale), 2), int(2793 * scale), gen)
    print(f"k-reciprocal re-ranking (k1 20, k2 6, lambda 0.3), Market-1501 size: {nq} queries, {ng} gallery, {dim}-d")

    def ours():
        blocks = k_reciprocal_distances(qf, gf, metric="euclidean")
        return reid_metrics(
            query_labels=q_ids, gallery_labels=g_ids, query_cameras=qc, gallery_cameras=gc, distances=blocks
        )

    def theirs():
        dist = dense_re_ranking(qf, gf)
        return reid_metrics(
            query_labels=q_ids, gallery_labels=g_ids, query_cameras=qc, gallery_cameras=gc, distances=dist
        )

    plain = reid_metrics(qf, gf, q_ids, g_ids, qc, gc, metric="euclidean")
    o, t1, m1 = measure(ours)
    r, t2, m2 = measure(theirs)
    print(
        f"  mAP: plain {plain['mAP']:.6f}, re-ranked ours {o['mAP']:.6f} | dense reference {r['mAP']:.6f} "
        f"(|diff| {abs(o['mAP'] - r['mAP']):.1e}); Rank-1 ours {o['Rank-1']:.6f} | reference {r['Rank-1']:.6f}"
    )
    row("re-ranked evaluation (sparse vs dense)", (t1, m1), (t2, m2))
    print(f"  peak memory ours / reference: {m1 / max(m2, 1):.3f} (target <= 0.1); time ratio {t1 / t2:.2f}")


def bench_msmt(scale: float) -> None:
    from centrum.evaluation import k_reciprocal_distances

    gen = torch.Generator().manual_seed(4)
    nq, ng, dim = int(11659 * scale), int(82161 * scale), 2048
    qf, gf, q_ids, g_ids, qc, gc = reid_sets(nq, ng, dim, max(int(3060 * scale), 2), 0, gen)
    n = nq + ng
    print(f"k-reciprocal re-ranking, MSMT17 size (synthetic): {nq} queries, {ng} gallery, {dim}-d")

    def ours():
        blocks = k_reciprocal_distances(qf, gf, metric="euclidean")
        return reid_metrics(
            query_labels=q_ids, gallery_labels=g_ids, query_cameras=qc, gallery_cameras=gc, distances=blocks
        )

    plain, t0, m0 = measure(lambda: reid_metrics(qf, gf, q_ids, g_ids, qc, gc, metric="euclidean"))
    o, t1, m1 = measure(ours)
    print(f"  mAP plain {plain['mAP']:.6f} ({t0:.1f} s, {m0 / 2**20:.0f} MB), re-ranked {o['mAP']:.6f}")
    print(
        f"  ours: {t1:.1f} s, peak {m1 / 2**30:.2f} GB above the embeddings (target <= 8 GB) | dense reference: not "
        f"runnable here, one {n} x {n} float32 matrix is {n * n * 4 / 2**30:.0f} GB and it holds several"
    )


# --- Stanford Online Products ---------------------------------------------------------------------
def bench_sop(scale: float) -> None:
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import FaissKMeans

    from centrum.evaluation import kmeans_labels, normalized_mutual_info, pairwise_f1
    from centrum.evaluation._ranking import PreparedGallery, auto_chunk_size
    from centrum.evaluation._symmetric import block_distance_function
    from centrum.evaluation.dml import DML_CHUNK_ELEMENTS, DML_SIDE

    class Calculator(AccuracyCalculator):
        """AccuracyCalculator plus Recall@K (from its k-NN labels) and the pairwise F1 of its clustering."""

        def calculate_recall_at_k(self, knn_labels, query_labels, **kwargs):
            hits = knn_labels == query_labels[:, None]
            return {k: hits[:, :k].any(1).double().mean().item() for k in (1, 10, 100, 1000)}

        def calculate_F1(  # noqa: N802 (AccuracyCalculator finds metrics by name)
            self, query_labels, cluster_labels, **kwargs
        ):
            return pairwise_f1(query_labels.long(), cluster_labels)

        def requires_knn(self):
            return [*super().requires_knn(), "recall_at_k"]

        def requires_clustering(self):
            return [*super().requires_clustering(), "F1"]

    gen = torch.Generator().manual_seed(1)
    n_classes = max(int(11316 * scale), 10)
    counts = torch.randint(2, 10, (n_classes,), generator=gen)
    x, labels = clustered(n_classes, counts, 512, 2.5, gen)
    print(f"Stanford Online Products size: {x.shape[0]} embeddings, 512-d, {n_classes} classes")
    seed = 1234

    def ours_knn():
        return dml_metrics(x, labels, recall_ks=(1, 10, 100, 1000), metric="squared_euclidean", clustering=False)

    def ours_clustering():
        num_classes = int(torch.unique(labels).numel())
        clusters = kmeans_labels(x, num_classes, seed=seed, backend="faiss")
        return {"NMI": normalized_mutual_info(labels, clusters), "F1": pairwise_f1(labels, clusters)}

    def theirs_knn():
        calc = Calculator(include=("recall_at_k", "mean_average_precision_at_r"), k=1000, device=torch.device("cpu"))
        return calc.get_accuracy(x, labels)

    def theirs_clustering():
        kmeans = FaissKMeans(niter=20, seed=seed)
        calc = Calculator(include=("NMI", "F1"), device=torch.device("cpu"), kmeans_func=kmeans)
        return calc.get_accuracy(x, labels)

    def product_only():  # the N x N distance product alone, in query blocks: the floor of a query-by-query k-NN
        prepared = PreparedGallery(x, "squared_euclidean")
        step = auto_chunk_size(x.shape[0], x.shape[0], None, DML_CHUNK_ELEMENTS)
        for start in range(0, x.shape[0], step):
            prepared.distances(prepared.vectors[start : start + step])

    def half_product_only():  # the blocks on and above the diagonal alone: the floor of our symmetric pass
        distances = block_distance_function(x, "squared_euclidean")
        n = x.shape[0]
        for a in range(0, n, DML_SIDE):
            for b in range(a, n, DML_SIDE):
                distances(slice(a, a + DML_SIDE), slice(b, b + DML_SIDE))

    o, t1, m1 = measure(ours_knn)
    p, t2, m2 = measure(theirs_knn)
    _, t0, _ = measure(product_only)
    _, th, _ = measure(half_product_only)
    print(
        f"  bare float32 distance products: full N x N x 512 {t0:.2f} s, symmetric half (our blocks) {th:.2f} s; "
        f"our whole k-NN part takes {t1 / th:.2f}x the half product"
    )
    print(
        "  values (ours | pml): "
        + ", ".join(f"R@{k} {o[f'Recall@{k}']:.6f} | {p['recall_at_k'][k]:.6f}" for k in (1, 10, 100, 1000))
        + f", MAP@R {o['MAP@R']:.6f} | {p['mean_average_precision_at_r']:.6f}"
    )
    row("Recall@K + MAP@R (k-NN part)", (t1, m1), (t2, m2))
    o, t3, m3 = measure(ours_clustering)
    p, t4, m4 = measure(theirs_clustering)
    print(f"  values (ours | pml): NMI {o['NMI']:.6f} | {p['NMI']:.6f}, F1 {o['F1']:.6f} | {p['F1']:.6f}")
    row("NMI + F1 (same faiss k-means)", (t3, m3), (t4, m4))
    # dml_metrics(..., clustering=True) and get_accuracy with all five metrics run these two parts in turn
    row("all metrics (sum of both parts)", (t1 + t3, max(m1, m3)), (t2 + t4, max(m2, m4)))


# --- centroid index vs per-image index ------------------------------------------------------------
def bench_index(scale: float) -> None:
    gen = torch.Generator().manual_seed(2)
    n_classes, per_class, dim, n_queries = int(100_000 * scale), 10, 512, 1000
    images, centroids = EmbeddingIndex(dim), CentroidIndex(dim)
    centres = torch.randn(n_classes, dim, generator=gen)
    block = 10_000
    for start in range(0, n_classes, block):  # 100,000 images at a time: one 2 GB copy in all
        labels = torch.arange(start, min(start + block, n_classes)).repeat_interleave(per_class)
        x = centres[labels] + 2.5 * torch.randn(labels.shape[0], dim, generator=gen)
        images.add(x, labels)
        centroids.add(x, labels)
        del x
    q_labels = torch.randint(0, n_classes, (n_queries,), generator=gen)
    queries = centres[q_labels] + 2.5 * torch.randn(n_queries, dim, generator=gen)
    print(
        f"Index: {len(images)} images in {len(centroids)} classes ({per_class} per class), {dim}-d, "
        f"{n_queries} queries, k=10, exact torch search"
    )
    r1, t1, m1 = measure(lambda: centroids.search(queries, 10))
    r2, t2, m2 = measure(lambda: images.search(queries, 10))
    hit_c = float((r1.labels[:, 0] == q_labels.numpy()).mean())
    hit_i = float((r2.labels[:, 0] == q_labels.numpy()).mean())
    print(f"  top-1 class accuracy: centroid index {hit_c:.4f}, per-image index {hit_i:.4f}")
    print(
        f"  stored vectors: centroid index {len(centroids) * dim * 4 / 2**20:.0f} MB, per-image index "
        f"{len(images) * dim * 4 / 2**20:.0f} MB"
    )
    print(
        f"  search: centroid index {t1:.2f} s ({m1 / 2**20:.0f} MB extra) | per-image index {t2:.2f} s "
        f"({m2 / 2**20:.0f} MB extra) | speed-up {t2 / t1:.1f}x = {100 * t2 / t1 / per_class:.0f} % of the "
        f"{per_class}x images-per-class ratio"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("market", "rerank", "msmt", "sop", "index", "all"), default="all")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full sizes (default 1)")
    parser.add_argument("--quick", action="store_true", help="a quick check at --scale 0.1")
    args = parser.parse_args()
    if args.quick:
        args.scale = 0.1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    parts = (
        ("market", bench_market),
        ("rerank", bench_rerank),
        ("msmt", bench_msmt),
        ("sop", bench_sop),
        ("index", bench_index),
    )
    for part, fn in parts:
        if args.part in (part, "all"):
            fn(args.scale)


if __name__ == "__main__":
    main()
