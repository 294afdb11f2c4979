"""Cross-checks against pytorch-metric-learning (test dependency only) wherever the definitions agree.

Where our default deliberately differs, the test says how and checks the difference. PML 2.x has no
centroid triplet loss and no center loss, so those are checked against loops in test_ctl.py; the
label-smoothed cross-entropy is checked against torch's own implementation.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
pml_reducers = pytest.importorskip("pytorch_metric_learning.reducers")
pml_distances = pytest.importorskip("pytorch_metric_learning.distances")

from centrum.losses import (  # noqa: E402
    AngularLoss,
    ContrastiveLoss,
    CrossEntropyLabelSmooth,
    LiftedStructureLoss,
    NPairLoss,
    TripletMarginLoss,
)
from centrum.losses import functional as LF  # noqa: E402


def batch(P=6, M=3, D=8, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(P * M, D, generator=g) * scale
    labels = torch.arange(P).repeat_interleave(M)[torch.randperm(P * M, generator=g)]
    return x, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_contrastive_nonzero_average_equals_pml_default(seed):
    x, y = batch(seed=seed)
    ours = ContrastiveLoss(pos_margin=0.1, neg_margin=0.9, average="nonzero")(x, y)
    ref = pml_losses.ContrastiveLoss(pos_margin=0.1, neg_margin=0.9)(x, y)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


def test_contrastive_default_average_is_pml_with_mean_reducer():
    # Our default averages each term over all its pairs (PML's MeanReducer), not over non-zero ones.
    x, y = batch(seed=4)
    ours = ContrastiveLoss(pos_margin=0.1, neg_margin=0.9)(x, y)
    ref = pml_losses.ContrastiveLoss(pos_margin=0.1, neg_margin=0.9, reducer=pml_reducers.MeanReducer())(x, y)
    nonzero = pml_losses.ContrastiveLoss(pos_margin=0.1, neg_margin=0.9)(x, y)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    assert ours.item() < nonzero.item()  # averaging over zeros too gives a smaller value


@pytest.mark.parametrize("seed", [0, 1])
def test_triplet_batch_hard_equals_pml_batch_hard_miner(seed):
    x, y = batch(seed=seed)
    ours = TripletMarginLoss(margin=0.3, mining="hard")(x, y)
    pml = pml_losses.TripletMarginLoss(margin=0.3, reducer=pml_reducers.MeanReducer())
    ref = pml(x, y, pml_miners.BatchHardMiner()(x, y))
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    # PML's default reducer averages over non-zero triplets only; ours (Hermans et al.) over all anchors.
    nonzero = pml_losses.TripletMarginLoss(margin=0.3)(x, y, pml_miners.BatchHardMiner()(x, y))
    per_anchor_hinge = nonzero.item() >= ours.item()
    assert per_anchor_hinge


@pytest.mark.parametrize("soft", [False, True])
def test_triplet_all_equals_pml_all_triplets(soft):
    x, y = batch(seed=3)
    ours = TripletMarginLoss(margin=0.2, mining="all", soft_margin=soft)(x, y)
    if soft:
        # PML's smooth_loss is softplus(d_ap - d_an + margin); ours (Hermans' soft margin) has no margin.
        ref = pml_losses.TripletMarginLoss(margin=0.0, smooth_loss=True)(x, y)
    else:
        ref = pml_losses.TripletMarginLoss(margin=0.2)(x, y)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


def test_triplet_semihard_differs_from_pml_semihard_miner_as_documented():
    # PML's "semihard" keeps every triplet with d_ap < d_an < d_ap + margin and averages them; ours (TF /
    # Schroff) keeps one negative per anchor-positive pair: the nearest one beyond the positive. So for each
    # pair that PML mines, our negative is the nearest among PML's negatives for that pair.
    x, y = batch(seed=5)
    xn = F.normalize(x)
    margin = 0.4
    a, p, n = pml_miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard")(x, y)
    assert len(a) > 0
    D = torch.cdist(xn, xn)
    mat = LF.rowwise_distance(xn.unsqueeze(1), xn.unsqueeze(0))
    chosen, _ = LF.semihard_negative(mat, mat, y.unsqueeze(1) != y.unsqueeze(0))
    for ai, pi in {(int(i), int(j)) for i, j in zip(a, p, strict=True)}:
        pml_negs = [D[ai, int(k)].item() for i, j, k in zip(a, p, n, strict=True) if int(i) == ai and int(j) == pi]
        assert chosen[ai, pi].item() == pytest.approx(min(pml_negs), abs=1e-5)
    ours = TripletMarginLoss(margin=margin, mining="semihard")(x, y)
    ref = pml_losses.TripletMarginLoss(margin=margin)(x, y, (a, p, n))
    assert ours.item() != pytest.approx(ref.item(), rel=1e-3)


@pytest.mark.parametrize("seed", [0, 1])
def test_lifted_structure_equals_pml(seed):
    x, y = batch(seed=seed)
    ours = LiftedStructureLoss(neg_margin=1.0, pos_margin=0.0)(x, y)
    ref = pml_losses.LiftedStructureLoss(neg_margin=1.0, pos_margin=0.0)(x, y)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize("M", [2, 4])
def test_npair_equals_pml_plus_l2_penalty(M):
    # PML's NPairsLoss picks the same pair per class (first two samples) but has no L2 penalty, and its
    # default similarity normalises; ours (Symm paper setting) is the raw inner product.
    x, y = batch(P=8, M=M, seed=M, scale=0.5)
    raw_dot = pml_distances.DotProductSimilarity(normalize_embeddings=False)
    ref = pml_losses.NPairsLoss(distance=raw_dot)(x, y)
    assert NPairLoss(l2_reg=0.0)(x, y).item() == pytest.approx(ref.item(), rel=1e-5)
    a, p = LF.first_pairs(y)
    penalty = 0.25 * 0.002 * ((x[a] ** 2).sum(1).mean() + (x[p] ** 2).sum(1).mean())
    assert NPairLoss()(x, y).item() == pytest.approx(ref.item() + penalty.item(), rel=1e-5)
    normalised = pml_losses.NPairsLoss()(x, y)
    assert NPairLoss(l2_reg=0.0, normalize=True)(x, y).item() == pytest.approx(normalised.item(), rel=1e-5)


def test_angular_all_pairs_equals_pml_on_unit_vectors():
    # PML's AngularLoss: every ordered positive pair, every other-class negative. It normalises anchors and
    # positives but not the negatives (ref_emb), so the two agree on unit vectors and differ otherwise.
    x, y = batch(seed=6)
    xn = F.normalize(x)
    ours = AngularLoss(alpha=40.0, pairs="all", normalize=True)
    assert ours(xn, y).item() == pytest.approx(pml_losses.AngularLoss(alpha=40)(xn, y).item(), rel=1e-5)
    assert ours(x, y).item() == pytest.approx(ours(xn, y).item(), rel=1e-6)
    assert pml_losses.AngularLoss(alpha=40)(x, y).item() != pytest.approx(ours(x, y).item(), rel=1e-2)


def test_label_smoothing_equals_torch_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 7, generator=g)
    labels = torch.randint(0, 7, (10,), generator=g)
    ours = CrossEntropyLabelSmooth(7, epsilon=0.1)(logits, labels)
    assert ours.item() == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=0.1).item(), rel=1e-6)
