"""Symmetrical Synthesis: the reflection's invariants, brute-force checks of the chosen negatives, the
official variant against a loop, gradients through synthetic points, statistics."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from centrum.losses import (
    AngularLoss,
    ContrastiveLoss,
    LiftedStructureLoss,
    NPairLoss,
    SymmetricalSynthesis,
    TripletMarginLoss,
    build_loss,
    symmetric_reflection,
)


class CapturingTriplet(TripletMarginLoss):
    """Records what Symm hands to the base loss. It opts out of the batch-hard shortcut (which hands over only
    each anchor's overall hardest negative), so that the per-class choices can be checked; the shortcut is
    checked against this general path in test_symm_gram.py."""

    uses_nearest_negative_only = False

    def loss_from_negatives(self, x, mat, labels, negatives):
        self.seen = (x, mat, negatives)
        return super().loss_from_negatives(x, mat, labels, negatives)


def batch(P=4, M=2, D=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(P).repeat_interleave(M)[torch.randperm(P * M, generator=g)]
    return torch.randn(P * M, D, generator=g), y


def candidates_by_class(x, y, alpha=2.0, beta=1.0):
    """Brute force: every class's originals and the reflection of each sample about each other same-class one."""
    out: dict[int, list[tuple[torch.Tensor, bool]]] = {}
    for i in range(len(y)):
        out.setdefault(int(y[i]), []).append((x[i], False))
    for k, l in itertools.permutations(range(len(y)), 2):
        if y[k] == y[l]:
            u = x[l] / x[l].norm()
            r = (x[k] @ u) * u
            out[int(y[k])].append((beta * (x[k] + alpha * (r - x[k])), True))
    return out


def test_reflection_preserves_norm_distance_and_cosine_to_axis():
    g = torch.Generator().manual_seed(0)
    x, axis = torch.randn(50, 16, generator=g), torch.randn(50, 16, generator=g) * 3
    s = symmetric_reflection(x, axis)
    assert torch.allclose(s.norm(dim=1), x.norm(dim=1), atol=1e-5)
    assert torch.allclose((s - axis).norm(dim=1), (x - axis).norm(dim=1), atol=1e-5)
    assert torch.allclose(F.cosine_similarity(s, axis), F.cosine_similarity(x, axis), atol=1e-5)
    # it is a genuine reflection: applying it twice gives x back, and x - s is orthogonal to the axis
    assert torch.allclose(symmetric_reflection(s, axis), x, atol=1e-5)
    assert torch.allclose((x - s) @ axis.T * torch.eye(50), torch.zeros(50, 50), atol=1e-4)


def test_reflection_family_alpha_beta():
    x, axis = torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 0.0]])
    assert symmetric_reflection(x, axis).tolist() == [[1.0, -1.0]]
    assert symmetric_reflection(x, axis, alpha=1.0).tolist() == [[1.0, 0.0]]  # the projection
    assert symmetric_reflection(x, axis, alpha=2.0, beta=0.5).tolist() == [[0.5, -0.5]]


@pytest.mark.parametrize(("P", "M", "k"), [(4, 2, 1), (3, 3, 1), (3, 3, 2), (2, 4, 3)])
def test_chosen_negatives_are_the_hardest_candidates(P, M, k):
    x, y = batch(P, M, seed=P + M + k)
    base = CapturingTriplet(normalize=True)
    symm = SymmetricalSynthesis(base, top_k=k)
    symm(x, y)
    xn, _, neg = base.seen
    cands = candidates_by_class(xn, y)
    classes = sorted(cands)
    for a in range(len(y)):
        slots = neg.values[a].view(len(classes), k)
        flags = neg.is_synthetic[a].view(len(classes), k)
        valid = neg.mask[a].view(len(classes), k)
        for ci, c in enumerate(classes):
            if c == int(y[a]):
                assert not valid[ci].any()
                continue
            brute = sorted(((xn[a] - p).norm().item(), s) for p, s in cands[c])[:k]
            assert valid[ci].all()
            for s in range(k):
                assert slots[ci, s].item() == pytest.approx(brute[s][0], abs=1e-5)
                assert bool(flags[ci, s]) == brute[s][1] or brute[s][0] == pytest.approx(
                    brute[min(s + 1, k - 1)][0], abs=1e-6
                )


def test_positives_stay_original():
    x, y = batch(4, 3, seed=1)
    base = CapturingTriplet()
    SymmetricalSynthesis(base)(x, y)
    xn, mat, _ = base.seen
    assert torch.allclose(xn, F.normalize(x), atol=1e-6)
    assert torch.allclose(mat, base.matrix(F.normalize(x)), atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("P", "M"), [(8, 2), (4, 4), (5, 3)])
def test_symm_triplet_hard_is_never_below_base(seed, P, M):
    x, y = batch(P, M, D=4, seed=seed)
    for candidates in ("anchor", "pair"):
        base = TripletMarginLoss(margin=0.2, mining="hard")
        assert SymmetricalSynthesis(base, candidates=candidates)(x, y).item() >= base(x, y).item() - 1e-6


def test_pair_mode_picks_the_hardest_cross_pair():
    x, y = batch(3, 2, seed=2)
    base = CapturingTriplet()
    SymmetricalSynthesis(base, candidates="pair")(x, y)
    xn, _, neg = base.seen
    cands = candidates_by_class(xn, y)
    classes = sorted(cands)
    for a in range(len(y)):
        for cj, c in enumerate(classes):
            if c == int(y[a]):
                continue
            brute = min((u - v).norm().item() for (u, _), (v, _) in itertools.product(cands[int(y[a])], cands[c]))
            assert len(cands[int(y[a])]) * len(cands[c]) == 16
            assert neg.values[a, cj].item() == pytest.approx(brute, abs=1e-5)


def test_gradients_reach_both_originals_through_a_synthetic_negative():
    # class 1: x3 = (0, 1), x4 = (0.6, 0.8); x3 reflected about x4 is (0.96, 0.28), right next to the
    # class-0 anchors, so it is their hardest negative; with detach=True that path carries no gradient.
    x = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.6, 0.8]], requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    grads = {}
    for detach in (False, True):
        x.grad = None
        symm = SymmetricalSynthesis(TripletMarginLoss(margin=0.5, normalize=False), detach=detach)
        symm(x, y).backward()
        grads[detach] = x.grad.clone()
        assert symm.synthetic_ratio > 0
    through_synthetic = grads[False] - grads[True]
    assert through_synthetic[2].abs().sum() > 1e-4 and through_synthetic[3].abs().sum() > 1e-4


def test_synthetic_ratio_matches_brute_force_count():
    x, y = batch(5, 2, seed=4)
    base = CapturingTriplet()
    symm = SymmetricalSynthesis(base)
    symm(x, y)
    xn, _, _ = base.seen
    cands = candidates_by_class(xn, y)
    chosen = [
        min(((xn[a] - p).norm().item(), s) for p, s in cands[c])[1]
        for a in range(len(y))
        for c in cands
        if c != int(y[a])
    ]
    assert symm.synthetic_ratio == pytest.approx(sum(chosen) / len(chosen))
    assert symm.last_stats["num_synthetic_points"] == 10 and symm.last_stats["num_candidates"] == 20


@pytest.mark.parametrize(
    "make_base",
    [
        ContrastiveLoss,
        TripletMarginLoss,
        lambda: TripletMarginLoss(mining="semihard"),
        NPairLoss,
        LiftedStructureLoss,
        AngularLoss,
        lambda: NPairLoss(pairs="all"),
        lambda: AngularLoss(pairs="all"),
    ],
)
@pytest.mark.parametrize("candidates", ["anchor", "pair"])
@pytest.mark.parametrize("labels", [[0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]])
def test_every_base_loss_works_for_any_m(make_base, candidates, labels):
    y = torch.tensor(labels)
    x = torch.randn(len(labels), 5, requires_grad=True)
    symm = SymmetricalSynthesis(make_base(), candidates=candidates, top_k=2)
    loss = symm(x * 0.5, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert 0.0 <= symm.synthetic_ratio <= 1.0


def test_npair_symm_matches_loop():
    x, y = batch(4, 2, seed=7)
    x = x * 0.5
    symm = SymmetricalSynthesis(NPairLoss(l2_reg=0.0))
    ours = symm(x, y).item()
    cands = candidates_by_class(x, y)
    total, pairs = 0.0, []
    for c in sorted(cands):
        idx = [i for i in range(len(y)) if int(y[i]) == c]
        pairs.append((idx[0], idx[1]))
    for a, p in pairs:
        s_ap = float(x[a] @ x[p])
        negs = [max(float(x[a] @ q) for q, _ in cands[c]) for c in cands if c != int(y[a])]
        total += math.log1p(sum(math.exp(s - s_ap) for s in negs))
    assert ours == pytest.approx(total / len(pairs), rel=1e-5)


def official_loop(x, y, loss_name, alpha_deg=45.0, l2_reg=0.002):
    idx = {}
    for i, c in enumerate(y.tolist()):
        idx.setdefault(c, []).append(i)
    pairs = [(v[0], v[1]) for v in idx.values()]
    A = [x[a] for a, _ in pairs]
    P = [x[p] for _, p in pairs]

    def refl(v, axis):
        u = axis / axis.norm()
        return 2 * (v @ u) * u - v

    S1 = [refl(a, p) for a, p in zip(A, P, strict=True)]
    S2 = [refl(p, a) for a, p in zip(A, P, strict=True)]
    sets = [A, P, S1, S2]
    n = len(pairs)
    t2 = math.tan(math.radians(alpha_deg)) ** 2
    combos = itertools.combinations(range(4), 2) if loss_name == "npair" else itertools.permutations(range(4), 2)
    combos = list(combos)
    total = 0.0
    for i in range(n):
        row = []
        for j in range(n):
            vals = []
            for s, t in combos:
                X, Y = sets[s], sets[t]
                if loss_name == "npair":
                    vals.append(float(X[i] @ Y[j]))
                elif i == j:
                    vals.append(2 * (1 + t2) * float(X[i] @ Y[i]))
                else:
                    vals.append(4 * t2 * float((X[i] + Y[i]) @ Y[j]))
            row.append(max(vals))
        total += math.log(sum(math.exp(v) for v in row)) - row[i]
    loss = total / n
    if loss_name == "npair":
        loss += 0.25 * l2_reg * (sum(float(a @ a) for a in A) / n + sum(float(p @ p) for p in P) / n)
    return loss


@pytest.mark.parametrize("name", ["npair", "angular"])
def test_official_variant_matches_loop(name):
    x, y = batch(4, 2, seed=11)
    x = x * 0.4
    symm = build_loss(name, symm=True, symm_options={"variant": "official"})
    assert symm(x, y).item() == pytest.approx(official_loop(x, y, name), rel=1e-5)
    assert 0.0 <= symm.synthetic_ratio <= 1.0


def test_official_positive_logit_is_inflated_for_badly_separated_pairs():
    # anchor and positive 150 degrees apart: a . (a reflected about p) = cos(300 deg) = 0.5 > a . p = cos(150 deg),
    # so the official max over combinations (diagonal included) raises the positive logit; the loop
    # reference above, which matches our official variant, takes that maximum.
    th = math.radians(150)
    a, p = torch.tensor([[1.0, 0.0]]), torch.tensor([[math.cos(th), math.sin(th)]])
    s1 = symmetric_reflection(a, p)
    assert (a * s1).sum().item() == pytest.approx(0.5, abs=1e-6)
    assert (a * s1).sum().item() > (a * p).sum().item()
    x = torch.cat([a, p, torch.tensor([[0.0, -1.0], [0.1, -1.0]])])
    y = torch.tensor([0, 0, 1, 1])
    official = SymmetricalSynthesis(NPairLoss(l2_reg=0.0), variant="official")(x, y)
    assert official.item() == pytest.approx(official_loop(x, y, "npair", l2_reg=0.0), rel=1e-5)


def test_symm_rejects_bad_configuration_and_batches():
    with pytest.raises(ValueError, match="pair-based loss"):
        SymmetricalSynthesis(torch.nn.MSELoss())
    with pytest.raises(ValueError, match="only for NPairLoss and AngularLoss"):
        SymmetricalSynthesis(TripletMarginLoss(), variant="official")
    with pytest.raises(ValueError, match="top_k"):
        SymmetricalSynthesis(TripletMarginLoss(), top_k=0)
    with pytest.raises(ValueError, match="candidates"):
        SymmetricalSynthesis(TripletMarginLoss(), candidates="class")
    with pytest.raises(ValueError, match="no class in labels has two samples"):
        SymmetricalSynthesis(TripletMarginLoss())(torch.randn(3, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="single class"):
        SymmetricalSynthesis(TripletMarginLoss())(torch.randn(3, 4), torch.tensor([1, 1, 1]))
