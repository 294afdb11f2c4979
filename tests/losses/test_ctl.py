"""Centroid Triplet Loss (paper and official variants), center loss and label-smoothed cross-entropy."""

from __future__ import annotations

import math

import pytest
import torch

from centrum.distances import l2_normalize, pairwise_distance
from centrum.losses import CenterLoss, CentroidTripletLoss, CrossEntropyLabelSmooth, centroid_triplet_loss
from centrum.losses.functional import _ctl_official_general, rowwise_distance


def d(a: torch.Tensor, b: torch.Tensor) -> float:
    return math.sqrt(max(float(((a - b) ** 2).sum()), 1e-12))


def ctl_paper_loop(x: torch.Tensor, labels: list[int], margin: float) -> float:
    classes = sorted(set(labels))
    means = {c: torch.stack([x[i] for i in range(len(labels)) if labels[i] == c]).mean(0) for c in classes}
    losses = []
    for q in range(len(labels)):
        others = [x[i] for i in range(len(labels)) if labels[i] == labels[q] and i != q]
        if not others:
            continue
        c_p = torch.stack(others).mean(0)
        d_n = min(d(x[q], means[c]) for c in classes if c != labels[q])
        losses.append(max(0.0, d(x[q], c_p) - d_n + margin))
    return sum(losses) / len(losses)


def ctl_official_authors_loop(x: torch.Tensor, labels: list[int], margin: float) -> float:
    """The authors' training step, step by step (train_ctl_model.py + create_masks_train + the triplet loss
    with hard_example_mining and MarginRankingLoss), for a batch of equal-size classes."""
    # create_masks_train: per rotation, the r-th sample (in order of appearance) of each class is the query
    by_class: dict[int, list[int]] = {}
    for i, c in enumerate(labels):
        by_class.setdefault(c, []).append(i)
    groups = list(by_class.values())
    M = max(len(g) for g in groups)
    rotation_losses = []
    for r in range(M):
        query_idx = [g[r] for g in groups]
        centroids = [torch.stack([x[i] for i in g if i != g[r]]).mean(0) for g in groups]
        emb = [x[i] for i in query_idx] + centroids
        lab = [labels[i] for i in query_idx] * 2
        n = len(emb)
        losses = []
        for a in range(n):
            # hard_example_mining: positives include the anchor itself (distance sqrt(1e-12))
            d_ap = max(d(emb[a], emb[j]) for j in range(n) if lab[j] == lab[a])
            d_an = min(d(emb[a], emb[j]) for j in range(n) if lab[j] != lab[a])
            losses.append(max(0.0, d_ap - d_an + margin))  # MarginRankingLoss(dist_an, dist_ap, y=1)
        rotation_losses.append(sum(losses) / n)
    return sum(rotation_losses) / len(rotation_losses)


def ctl_official_generalised_loop(x: torch.Tensor, labels: list[int], margin: float) -> float:
    """Our documented generalisation to unequal class sizes: a class without an r-th sample contributes its
    full mean as a negative only; a class of one sample has no leave-one-out centroid."""
    by_class: dict[int, list[int]] = {}
    for i, c in enumerate(labels):
        by_class.setdefault(c, []).append(i)
    R = max(len(g) for g in by_class.values())
    rotation_losses = []
    for r in range(R):
        points: list[tuple[torch.Tensor, int, bool]] = []  # (point, class, has partner)
        for c, g in by_class.items():
            if r < len(g):
                rest = [x[i] for i in g if i != g[r]]
                points.append((x[g[r]], c, bool(rest)))
                if rest:
                    points.append((torch.stack(rest).mean(0), c, True))
            else:
                points.append((torch.stack([x[i] for i in g]).mean(0), c, False))
        losses = []
        for a, (pa, ca, anchor) in enumerate(points):
            negs = [d(pa, pb) for pb, cb, _ in points if cb != ca]
            if not anchor or not negs:
                continue
            d_ap = max(d(pa, pb) for b, (pb, cb, _) in enumerate(points) if cb == ca and b != a)
            losses.append(max(0.0, d_ap - min(negs) + margin))
        if losses:
            rotation_losses.append(sum(losses) / len(losses))
    return sum(rotation_losses) / len(rotation_losses)


def test_paper_variant_hand_computed_2d():
    # class 0: (0,0), (2,0); class 1: (0,3), (0,5). Class means (1,0) and (0,4).
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 5.0]])
    y = torch.tensor([0, 0, 1, 1])
    # q0: c_P = (2,0) -> 2; c_N = (0,4) -> 4; 2 - 4 + 3 = 1
    # q1: c_P = (0,0) -> 2; d((2,0),(0,4)) = sqrt(20); 2 - sqrt(20) + 3
    # q2: c_P = (0,5) -> 2; d((0,3),(1,0)) = sqrt(10); 2 - sqrt(10) + 3
    # q3: c_P = (0,3) -> 2; d((0,5),(1,0)) = sqrt(26); 2 - sqrt(26) + 3 < 0
    expected = (1 + (5 - math.sqrt(20)) + (5 - math.sqrt(10)) + 0) / 4
    assert CentroidTripletLoss(margin=3.0)(x, y).item() == pytest.approx(expected, abs=1e-5)


def test_paper_variant_singleton_class_is_negative_only():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 0.5]])
    y = torch.tensor([0, 0, 1])
    # q0: d_P = 2, d_N = d((0,0),(1,0.5)); q1: same by symmetry; the singleton is never a query
    expected = max(0.0, 2 - math.sqrt(1.25) + 0.5)
    assert CentroidTripletLoss(margin=0.5)(x, y).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_variant_matches_loop_on_imbalanced_batches(seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4])[torch.randperm(11, generator=g)]
    x = torch.randn(11, 6, generator=g)
    ours = CentroidTripletLoss(margin=0.5)(x, y)
    assert ours.item() == pytest.approx(ctl_paper_loop(x, y.tolist(), 0.5), abs=1e-5)


@pytest.mark.parametrize(("P", "M"), [(4, 2), (3, 4), (5, 3)])
def test_official_variant_matches_authors_algorithm(P, M):
    g = torch.Generator().manual_seed(P * M)
    y = torch.arange(P).repeat_interleave(M)  # the authors' contiguous P x M layout
    x = torch.randn(P * M, 7, generator=g) * 2
    ours = CentroidTripletLoss(margin=0.5, variant="official")(x, y)
    assert ours.item() == pytest.approx(ctl_official_authors_loop(x, y.tolist(), 0.5), abs=1e-5)


def _shuffled_balanced(P: int, M: int, D: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(P).repeat_interleave(M) * 7 - 3)[torch.randperm(P * M, generator=g)]
    return torch.randn(P * M, D, generator=g), y


def _official_general(x: torch.Tensor, y: torch.Tensor, distance: str, normalize: bool) -> torch.Tensor:
    """The general (any class sizes) official path, bypassing the equal-size fast path."""
    _, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    return _ctl_official_general(l2_normalize(x) if normalize else x, inverse, counts, 0.5, distance)


@pytest.mark.parametrize("M", [2, 3, 4])
@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine", "dot"])
@pytest.mark.parametrize("normalize", [False, True])
def test_official_fast_path_equals_general_path_in_value_and_gradient(M, distance, normalize):
    x, y = _shuffled_balanced(5, M, 8, seed=M)
    x = x.requires_grad_()
    fast = centroid_triplet_loss(x, y, 0.5, "official", distance, normalize)
    (g_fast,) = torch.autograd.grad(fast, x)
    general = _official_general(x, y, distance, normalize)
    (g_general,) = torch.autograd.grad(general, x)
    assert fast.item() > 0
    torch.testing.assert_close(fast, general, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_fast, g_general, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("M", [2, 3, 4])
def test_official_fast_path_matches_authors_loop_on_shuffled_batches(M):
    x, y = _shuffled_balanced(6, M, 7, seed=10 + M)
    x = x * 2
    ours = centroid_triplet_loss(x, y, variant="official")
    assert ours.item() == pytest.approx(ctl_official_authors_loop(x, y.tolist(), 0.5), abs=1e-5)
    # the same batch handed over grouped by class (each class keeping its order) gives the same loss
    order = torch.argsort(y, stable=True)
    assert centroid_triplet_loss(x[order], y[order], variant="official").item() == pytest.approx(ours.item(), abs=1e-6)


def test_official_fast_path_gradient_on_contiguous_and_strided_input():
    x, y = _shuffled_balanced(4, 4, 6, seed=21)
    order = torch.argsort(y, stable=True)
    x, y = x[order], y[order]  # grouped: no reordering inside
    strided = x.T.contiguous().T.requires_grad_()  # same values, column-major storage
    loss = centroid_triplet_loss(strided, y, variant="official")
    loss.backward(retain_graph=True)
    first = strided.grad.clone()
    loss.backward()  # the saved tensors are left intact: a second backward adds the same gradient
    torch.testing.assert_close(strided.grad, 2 * first)
    x = x.clone().requires_grad_()
    general = _official_general(x, y, "euclidean", False)
    general.backward()
    torch.testing.assert_close(first, x.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine", "dot"])
def test_paper_variant_gradient_matches_dense_formulation(distance):
    g = torch.Generator().manual_seed(8)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4])[torch.randperm(11, generator=g)]
    x = torch.randn(11, 6, generator=g, requires_grad=True)
    ours = centroid_triplet_loss(x, y, 0.5, "paper", distance)
    (g_ours,) = torch.autograd.grad(ours, x)
    # dense reference: every query-to-centroid distance with gradient, the hardest negative by masked min
    classes, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(classes), 6).index_add(0, inverse, x)
    own = counts[inverse]
    loo = (sums[inverse] - x) / (own - 1).clamp_min(1).unsqueeze(1)
    d_neg = pairwise_distance(x, sums / counts.unsqueeze(1), distance)
    d_neg = d_neg.masked_fill(inverse.unsqueeze(1) == torch.arange(len(classes)), float("inf")).min(1).values
    ref = torch.relu(rowwise_distance(x, loo, distance) - d_neg + 0.5)[own >= 2].mean()
    (g_ref,) = torch.autograd.grad(ref, x)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-5)


def test_ctl_finite_values_whose_sum_overflows_are_not_rejected():
    # the NaN/inf check starts from the sum; a sum that overflows must fall back to the full check, not raise
    x = torch.tensor([[3e38, 3e38], [3e38, 2e38], [-1.0, 0.0], [0.0, 1.0]])
    for variant in ("paper", "official"):
        CentroidTripletLoss(variant=variant)(x, torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="NaN or inf values in 1 row"):
        CentroidTripletLoss(variant="official")(x.clone().index_fill_(0, torch.tensor([2]), float("nan")), [0, 0, 1, 1])


def test_official_variant_on_shuffled_balanced_batch_uses_order_of_appearance():
    g = torch.Generator().manual_seed(3)
    y = torch.arange(4).repeat_interleave(3)[torch.randperm(12, generator=g)]
    x = torch.randn(12, 5, generator=g)
    ours = CentroidTripletLoss(variant="official")(x, y)
    assert ours.item() == pytest.approx(ctl_official_authors_loop(x, y.tolist(), 0.5), abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_official_variant_on_imbalanced_batches_matches_generalised_loop(seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])[torch.randperm(10, generator=g)]
    x = torch.randn(10, 4, generator=g)
    ours = CentroidTripletLoss(variant="official")(x, y)
    assert ours.item() == pytest.approx(ctl_official_generalised_loop(x, y.tolist(), 0.5), abs=1e-5)


def test_variants_differ_on_the_same_batch():
    g = torch.Generator().manual_seed(9)
    y = torch.arange(4).repeat_interleave(4)
    x = torch.randn(16, 8, generator=g)
    assert CentroidTripletLoss(variant="paper")(x, y).item() != pytest.approx(
        CentroidTripletLoss(variant="official")(x, y).item(), rel=1e-3
    )


def test_functional_matches_module_and_gradients_flow():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(12, 6, generator=g, requires_grad=True)
    y = torch.arange(4).repeat_interleave(3)
    for variant in ("paper", "official"):
        x.grad = None
        loss = centroid_triplet_loss(x, y, margin=2.0, variant=variant)
        assert loss.item() == pytest.approx(CentroidTripletLoss(margin=2.0, variant=variant)(x, y).item())
        loss.backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_ctl_float16_and_distances():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 4, generator=g)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    assert CentroidTripletLoss()(x.half(), y).dtype == torch.float32
    for distance in ("squared_euclidean", "cosine", "dot"):
        assert torch.isfinite(CentroidTripletLoss(distance=distance, normalize=True)(x, y))


def test_ctl_no_class_with_two_samples_is_a_clear_error():
    with pytest.raises(ValueError, match="no class in labels has two samples"):
        CentroidTripletLoss()(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))


def test_ctl_single_class_is_a_clear_error():
    with pytest.raises(ValueError, match="single class"):
        CentroidTripletLoss(variant="official")(torch.randn(4, 3), torch.tensor([7, 7, 7, 7]))


def test_center_loss_hand_computed_and_strong_baseline_formula():
    loss = CenterLoss(num_classes=3, feat_dim=2)
    with torch.no_grad():
        loss.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]))
    x = torch.tensor([[1.0, 0.0], [1.0, 3.0], [0.0, 0.0]])
    y = torch.tensor([0, 1, 1])
    # squared distances 1, 4, 2 -> mean 7/3 (strong baseline: sum of masked distmat / batch size)
    assert loss(x, y).item() == pytest.approx(7 / 3, abs=1e-6)
    distmat = torch.cdist(x, loss.centers) ** 2
    mask = y.unsqueeze(1) == torch.arange(3).unsqueeze(0)
    assert loss(x, y).item() == pytest.approx(((distmat * mask).sum() / 3).item(), abs=1e-5)
    loss(x, y).backward()
    assert loss.centers.grad[2].abs().sum() == 0 and loss.centers.grad[:2].abs().sum() > 0


def test_center_loss_rejects_bad_labels_and_dims():
    loss = CenterLoss(num_classes=3, feat_dim=2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        loss(torch.randn(2, 2), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="feat_dim=2"):
        loss(torch.randn(2, 4), torch.tensor([0, 1]))


def test_label_smoothing_hand_computed():
    logits = torch.tensor([[0.0, 0.0]])
    # uniform prediction: -log(1/2) whatever the targets
    assert CrossEntropyLabelSmooth(2)(logits, torch.tensor([1])).item() == pytest.approx(math.log(2))
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    logp = torch.log_softmax(logits, 1)[0]
    expected = -(0.9 + 0.1 / 3) * logp[0] - (0.1 / 3) * (logp[1] + logp[2])
    assert CrossEntropyLabelSmooth(3, 0.1)(logits, torch.tensor([0])).item() == pytest.approx(expected.item())


def test_label_smoothing_rejects_bad_input():
    loss = CrossEntropyLabelSmooth(3)
    with pytest.raises(ValueError, match="N x 3"):
        loss(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        loss(torch.randn(2, 3), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="2 entries but logits has 3"):
        loss(torch.randn(3, 3), torch.tensor([0, 1]))
