"""Bad input gets a ValueError that says what is wrong, for every batch loss; the registry checks names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from centrum.losses import LOSSES, CentroidTripletLoss, SymmetricalSynthesis, TripletMarginLoss, build_loss

BATCH_LOSSES = {name: cls for name, cls in LOSSES.items()}
BATCH_LOSSES["symm_triplet"] = lambda: SymmetricalSynthesis(TripletMarginLoss())
BATCH_LOSSES["symm_npair_official"] = lambda: build_loss("npair", symm=True, symm_options={"variant": "official"})

GOOD_X = torch.randn(6, 4)
GOOD_Y = torch.tensor([0, 0, 1, 1, 2, 2])

CASES = [
    ("1-D embeddings", torch.randn(6), GOOD_Y, r"2-D \(N x D\) matrix"),
    ("3-D embeddings", torch.randn(6, 4, 1), GOOD_Y, r"2-D \(N x D\) matrix"),
    ("empty batch", torch.randn(0, 4), torch.tensor([], dtype=torch.long), "empty"),
    ("label count", GOOD_X, torch.tensor([0, 0, 1, 1, 2]), "5 entries but embeddings has 6 rows"),
    ("2-D labels", GOOD_X, GOOD_Y.view(3, 2), "1-D vector"),
    ("float labels", GOOD_X, GOOD_Y.float(), "must be integers"),
    ("integer embeddings", GOOD_X.long(), GOOD_Y, "floating point"),
    ("NaN", torch.tensor([[0.0, 1.0]] * 5 + [[float("nan"), 0.0]]), GOOD_Y, "NaN or inf values in 1 row"),
    ("inf", torch.tensor([[0.0, float("inf")]] + [[1.0, 0.0]] * 5), GOOD_Y, "NaN or inf values in 1 row"),
    ("single class", GOOD_X, torch.zeros(6, dtype=torch.long), "single class"),
]


@pytest.mark.parametrize("name", sorted(BATCH_LOSSES))
@pytest.mark.parametrize(("case", "x", "y", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_batches_raise_clear_errors(name, case, x, y, message):
    loss = BATCH_LOSSES[name]()
    with pytest.raises(ValueError, match=message):
        loss(x, y)


@pytest.mark.parametrize("name", sorted(BATCH_LOSSES))
def test_numpy_input_is_accepted(name):
    out = BATCH_LOSSES[name]()(GOOD_X.numpy(), np.array([0, 0, 1, 1, 2, 2]))
    assert out.ndim == 0 and torch.isfinite(out)


@pytest.mark.parametrize(
    "make",
    [
        lambda: CentroidTripletLoss(),
        lambda: CentroidTripletLoss(variant="official"),
        lambda: SymmetricalSynthesis(TripletMarginLoss()),
    ],
)
def test_no_class_with_two_samples(make):
    with pytest.raises(ValueError, match="no class in labels has two samples"):
        make()(torch.randn(3, 2), torch.tensor([4, 5, 6]))


def test_bad_options():
    with pytest.raises(ValueError, match="unknown mining 'easy'"):
        TripletMarginLoss(mining="easy")
    with pytest.raises(ValueError, match="unknown distance 'manhattan'"):
        TripletMarginLoss(distance="manhattan")
    with pytest.raises(ValueError, match="unknown variant"):
        CentroidTripletLoss(variant="authors")
    with pytest.raises(ValueError, match="alpha must be an angle"):
        build_loss("angular", alpha=100)


def test_registry_and_build_loss():
    assert set(LOSSES) == {"contrastive", "triplet", "npair", "lifted", "angular", "centroid_triplet"}
    loss = build_loss("triplet", margin=0.3, mining="hard", distance="euclidean", normalize=False)
    assert isinstance(loss, TripletMarginLoss) and loss.margin == 0.3 and not loss.normalize
    symm = build_loss("lifted", symm=True, symm_options={"top_k": 2, "candidates": "pair"})
    assert isinstance(symm, SymmetricalSynthesis) and symm.top_k == 2 and symm.candidates == "pair"
    with pytest.raises(ValueError, match="unknown loss 'arcface'; choose one of angular, centroid_triplet"):
        build_loss("arcface")
    with pytest.raises(ValueError, match="pair-based losses only"):
        build_loss("centroid_triplet", symm=True)
    with pytest.raises(ValueError, match="bad options for loss 'triplet'"):
        build_loss("triplet", temperature=1.0)
    with pytest.raises(ValueError, match="bad symm_options"):
        build_loss("triplet", symm=True, symm_options={"gamma": 1})
