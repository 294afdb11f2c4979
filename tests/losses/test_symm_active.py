"""Symm's share of *active* negatives (those whose value receives a non-zero gradient), beside the share of chosen
ones: a synthetic negative that lies beyond the margin is chosen but changes nothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from centrum.losses import ContrastiveLoss, SymmetricalSynthesis, TripletMarginLoss, build_loss


def _unit_batch(p: int = 16, m: int = 2, d: int = 128, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(p * m, d, generator=gen), dim=1).requires_grad_()
    return x, torch.arange(p).repeat_interleave(m)


def test_contrastive_beyond_the_margin_chooses_synthetic_negatives_that_do_nothing():
    """The issue's case: random unit 128-d embeddings lie about sqrt(2) apart, beyond the margin 1, so with and
    without Symm the loss is the same, while a share of the chosen negatives is synthetic; none is active."""
    x, labels = _unit_batch()
    plain = ContrastiveLoss()(x, labels)
    symm = SymmetricalSynthesis(ContrastiveLoss())
    with_symm = symm(x, labels)
    assert torch.equal(plain, with_symm)
    with_symm.backward()
    assert symm.synthetic_ratio > 0.2
    stats = symm.last_backward_stats
    assert int(stats["num_active_negatives"]) == 0 and float(stats["active_synthetic_ratio"]) == 0.0


def test_active_counts_equal_a_brute_force_count():
    """Contrastive: a chosen negative is active exactly when it lies inside the margin; batch-hard triplet: an
    anchor's hardest negative is active exactly when its hinge is positive."""
    gen = torch.Generator().manual_seed(1)
    x = (F.normalize(torch.randn(24, 8, generator=gen), dim=1) * 0.6).requires_grad_()
    labels = torch.arange(8).repeat_interleave(3)
    symm = SymmetricalSynthesis(ContrastiveLoss(neg_margin=1.0, normalize=False))
    symm(x, labels).backward()
    negatives = symm._watched
    inside = negatives.mask & (negatives.values < 1.0)
    stats = symm.last_backward_stats
    assert int(stats["num_active_negatives"]) == int(inside.sum()) > 0
    assert int(stats["num_active_synthetic_negatives"]) == int((inside & negatives.is_synthetic).sum())

    x.grad = None
    triplet = SymmetricalSynthesis(TripletMarginLoss(margin=0.2, mining="hard", normalize=False))
    triplet(x, labels).backward()
    negatives = triplet._watched
    d = torch.cdist(x.detach(), x.detach())
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    d_ap = d.masked_fill(~same, -1).max(1).values
    hinge = d_ap - negatives.values.detach().squeeze(1) + 0.2
    assert int(triplet.last_backward_stats["num_active_negatives"]) == int((hinge > 0).sum())


def test_no_backward_no_active_statistics():
    x, labels = _unit_batch()
    loss = build_loss("npair", symm=True)
    loss(x, labels)
    assert loss.last_backward_stats == {}
    with torch.no_grad():
        loss(x.detach(), labels)
    assert loss.last_backward_stats == {}


def test_smooth_losses_make_every_chosen_negative_active():
    """N-pair, lifted and angular weigh every negative by a softmax term, so every chosen one is active."""
    x, labels = _unit_batch(8, 2, 32)
    for name in ("npair", "lifted", "angular"):
        x.grad = None
        loss = build_loss(name, symm=True)
        loss(x, labels).backward()
        stats = loss.last_backward_stats
        assert float(stats["active_synthetic_ratio"]) == loss.synthetic_ratio > 0, name
