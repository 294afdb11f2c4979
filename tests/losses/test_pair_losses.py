"""Pair-based losses: hand-computed values, brute-force loops on random batches, dtypes, devices, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from losses_reference import (
    angular_loop,
    contrastive_loop,
    lifted_loop,
    normalize,
    npair_loop,
    triplet_loop,
)

from centrum.losses import (
    AngularLoss,
    ContrastiveLoss,
    LiftedStructureLoss,
    NPairLoss,
    TripletMarginLoss,
    hardest_negative,
    hardest_positive,
    semihard_negative,
    topk_hardest,
)

# Two classes on a line: class 0 at 0 and 1, class 1 at 3 and 5 (unnormalised Euclidean distances).
LINE = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [5.0, 0.0]])
LINE_LABELS = torch.tensor([0, 0, 1, 1])


def random_batch(P: int = 4, M: int = 3, D: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(P * M, D, generator=g)
    labels = torch.arange(P).repeat_interleave(M)[torch.randperm(P * M, generator=g)]
    return x, labels


def test_triplet_hard_hand_computed():
    # anchor 0: hardest pos 1, hardest neg 3 -> 1 - 3 + 0.5 < 0; anchor 1: 1 - 2 + 2.5 = 1.5;
    # anchor 2: hardest pos 2, hardest neg (to 1) 2 -> 2.5; anchor 3: 2 - 4 + 2.5 = 0.5
    loss = TripletMarginLoss(margin=2.5, normalize=False)(LINE, LINE_LABELS)
    assert loss.item() == pytest.approx((0.5 + 1.5 + 2.5 + 0.5) / 4, abs=1e-5)


def test_triplet_soft_margin_hand_computed():
    loss = TripletMarginLoss(mining="hard", soft_margin=True, normalize=False)(LINE, LINE_LABELS)
    expected = sum(math.log1p(math.exp(z)) for z in (1 - 3, 1 - 2, 2 - 2, 2 - 4)) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_contrastive_hand_computed():
    # pos distances: 1, 1, 2, 2 -> mean 1.5; neg (margin 4): 4-3, 4-5->0, 4-2, 4-4->0 each twice -> 3/4
    loss = ContrastiveLoss(pos_margin=0.0, neg_margin=4.0, normalize=False)(LINE, LINE_LABELS)
    assert loss.item() == pytest.approx(1.5 + 0.75, abs=1e-5)


@pytest.mark.parametrize("mining", ["hard", "semihard", "all"])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("normalized", [False, True])
def test_triplet_matches_loop(mining, soft, normalized):
    x, labels = random_batch(seed=hash((mining, soft, normalized)) % 1000)
    ours = TripletMarginLoss(margin=0.7, mining=mining, soft_margin=soft, normalize=normalized)(x, labels)
    ref = triplet_loop(normalize(x) if normalized else x, labels.tolist(), 0.7, mining, soft)
    assert ours.item() == pytest.approx(ref, abs=1e-5)


def test_contrastive_matches_loop():
    x, labels = random_batch(seed=3)
    ours = ContrastiveLoss(pos_margin=0.2, neg_margin=1.3)(x, labels)
    assert ours.item() == pytest.approx(contrastive_loop(normalize(x), labels.tolist(), 0.2, 1.3), abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_lifted_matches_loop(seed):
    x, labels = random_batch(P=3, M=3, seed=seed)
    ours = LiftedStructureLoss()(x, labels)
    assert ours.item() == pytest.approx(lifted_loop(normalize(x), labels.tolist()), rel=1e-5)


@pytest.mark.parametrize("M", [2, 3])
def test_npair_matches_loop(M):
    x, labels = random_batch(P=4, M=M, seed=M)
    x = x * 0.5
    ours = NPairLoss(l2_reg=0.002)(x, labels)
    assert ours.item() == pytest.approx(npair_loop(x, labels.tolist(), 0.002), rel=1e-5)


def test_npair_hand_computed():
    # 1-D pairs (0,1), (2,3); negatives are the other pair's positive: s_01 = 2 vs s_03 = 4 -> log(1 + e^2);
    # s_23 = 12 vs s_21 = 6 -> log(1 + e^-6). The L2 penalty adds 0.01/4 * (mean(1, 9) + mean(4, 16)).
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    loss = NPairLoss(l2_reg=0.01)(x, torch.tensor([0, 0, 1, 1]))
    expected = (math.log1p(math.exp(2)) + math.log1p(math.exp(-6))) / 2 + 0.0025 * (5 + 10)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("pairs", ["first", "all"])
@pytest.mark.parametrize("normalized", [False, True])
def test_angular_matches_loop(pairs, normalized):
    x, labels = random_batch(P=3, M=3, seed=7)
    x = x * 0.3
    ours = AngularLoss(alpha=40.0, pairs=pairs, normalize=normalized)(x, labels)
    ref = angular_loop(normalize(x) if normalized else x, labels.tolist(), 40.0, pairs)
    assert ours.item() == pytest.approx(ref, rel=1e-5)


def test_mining_helpers_against_loops():
    g = torch.Generator().manual_seed(1)
    d = torch.rand(6, 9, generator=g)
    mask = torch.rand(6, 9, generator=g) > 0.5
    mask[0] = False
    hp, vp = hardest_positive(d, mask)
    hn, vn = hardest_negative(d, mask)
    for i in range(6):
        cols = [j for j in range(9) if mask[i, j]]
        assert bool(vp[i]) == bool(cols) == bool(vn[i])
        if cols:
            assert hp[i].item() == pytest.approx(max(d[i, j].item() for j in cols))
            assert hn[i].item() == pytest.approx(min(d[i, j].item() for j in cols))
    groups = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1])
    vals, idx, valid = topk_hardest(d, mask, 2, groups=groups, num_groups=3)
    for i in range(6):
        for gr in range(3):
            cand = sorted((d[i, j].item(), j) for j in range(9) if mask[i, j] and groups[j] == gr)[:2]
            assert int(valid[i, gr].sum()) == len(cand)
            for s, (v, j) in enumerate(cand):
                assert vals[i, gr, s].item() == pytest.approx(v) and int(idx[i, gr, s]) == j


def test_semihard_helper_picks_nearest_farther_negative_or_farthest():
    d_ap = torch.tensor([[1.0, 3.0]])
    d_an = torch.tensor([[0.5, 2.0, 2.5]])
    chosen, valid = semihard_negative(d_ap, d_an, torch.ones(1, 3, dtype=torch.bool))
    # pair with d_ap = 1: nearest negative beyond it is 2.0; with d_ap = 3: none beyond, so the farthest, 2.5
    assert chosen.tolist() == [[2.0, 2.5]] and bool(valid.all())


ALL_LOSSES = [
    lambda: ContrastiveLoss(),
    lambda: TripletMarginLoss(mining="hard"),
    lambda: TripletMarginLoss(mining="semihard"),
    lambda: TripletMarginLoss(mining="all"),
    lambda: NPairLoss(),
    lambda: LiftedStructureLoss(),
    lambda: AngularLoss(normalize=True),
]


@pytest.mark.parametrize("make", ALL_LOSSES)
def test_float16_input_is_computed_in_float32(make):
    x, labels = random_batch(seed=5)
    x16 = x.half()
    out16 = make()(x16, labels)
    out32 = make()(x16.float(), labels)
    assert out16.dtype == torch.float32
    assert out16.item() == pytest.approx(out32.item(), abs=1e-6)


@pytest.mark.parametrize("make", ALL_LOSSES)
def test_gradients_are_finite_and_flow(make):
    x, labels = random_batch(seed=6)
    x.requires_grad_(True)
    make()(x, labels).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_duplicate_points_keep_gradients_finite():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    for loss in (TripletMarginLoss(normalize=False), ContrastiveLoss(), LiftedStructureLoss()):
        x.grad = None
        loss(x, labels).backward()
        assert torch.isfinite(x.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("make", ALL_LOSSES)
def test_cuda_matches_cpu(make):
    x, labels = random_batch(seed=8)
    assert make()(x.cuda(), labels.cuda()).item() == pytest.approx(make()(x, labels).item(), rel=1e-4)
