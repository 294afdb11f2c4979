"""Symmetrical Synthesis from the Gram matrix against the materialised reference (every synthetic point built,
anchors multiplied against the whole bank): the same loss (1e-5) and the same gradients w.r.t. the embeddings
(1e-4) over base losses, batch shapes (balanced, imbalanced, a singleton class), float16 input, detach, both
candidate modes, top-k 1..4, several alpha/beta and the official variant; the batch-hard shortcut against the
general path; and the promise itself: one N x D product per forward, no synthetic point built."""

from __future__ import annotations

import itertools

import pytest
import torch
from symm_materialised import MaterialisedSymm
from torch.utils._python_dispatch import TorchDispatchMode

from centrum.losses import (
    AngularLoss,
    ContrastiveLoss,
    LiftedStructureLoss,
    NPairLoss,
    SymmetricalSynthesis,
    TripletMarginLoss,
)

BASES = {
    "contrastive": ContrastiveLoss,
    "contrastive-nonzero-sq": lambda: ContrastiveLoss(distance="squared_euclidean", average="nonzero"),
    "triplet-hard": TripletMarginLoss,
    "triplet-hard-cosine": lambda: TripletMarginLoss(distance="cosine", normalize=False),
    "triplet-hard-dot-raw": lambda: TripletMarginLoss(distance="dot", normalize=False, margin=0.5),
    "triplet-semihard": lambda: TripletMarginLoss(mining="semihard"),
    "triplet-all-soft": lambda: TripletMarginLoss(mining="all", soft_margin=True),
    "npair": NPairLoss,
    "npair-all": lambda: NPairLoss(pairs="all"),
    "lifted": LiftedStructureLoss,
    "lifted-raw": lambda: LiftedStructureLoss(normalize=False),
    "angular": AngularLoss,
    "angular-all-normalised": lambda: AngularLoss(pairs="all", normalize=True),
}
LABELS = {
    "4x2": torch.arange(4).repeat_interleave(2),
    "3x3-shuffled": torch.tensor([2, 0, 1, 1, 0, 2, 2, 1, 0]),
    "2x4": torch.arange(2).repeat_interleave(4),
    "imbalanced": torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3]),
    "singleton": torch.tensor([5, 5, 7, 9, 9, 9, 3, 3]),  # class 7 has one sample: negatives only
}
SETTINGS = [  # (top_k, alpha, beta, detach, dtype)
    (1, 2.0, 1.0, False, torch.float32),
    (2, 2.0, 1.0, True, torch.float32),
    (3, 1.0, 1.0, False, torch.float32),
    (4, 1.5, 0.8, False, torch.float32),
    (1, 2.0, 1.0, False, torch.float16),
    (2, 0.5, 1.2, True, torch.float32),
]


def loss_and_grad(loss_fn, x0: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x0.clone().requires_grad_(True)
    loss = loss_fn(x, y)
    loss.backward()
    return loss.detach().double(), x.grad.double()


def assert_same(new, old, what: str) -> None:
    (l_new, g_new), (l_old, g_old) = new, old
    assert torch.allclose(l_new, l_old, rtol=1e-5, atol=1e-5), f"{what}: loss {l_new.item()} vs {l_old.item()}"
    err = (g_new - g_old).abs().max().item()
    assert torch.allclose(g_new, g_old, rtol=1e-4, atol=1e-4), f"{what}: gradient differs by {err}"


CASES = [
    (base, labels, candidates, setting)
    for i, (base, labels, candidates) in enumerate(itertools.product(BASES, LABELS, ("anchor", "pair")))
    for setting in (SETTINGS[i % len(SETTINGS)], SETTINGS[(i + 3) % len(SETTINGS)])
]


@pytest.mark.parametrize(("base", "labels", "candidates", "setting"), CASES)
def test_gram_symm_equals_materialised(base, labels, candidates, setting):
    top_k, alpha, beta, detach, dtype = setting
    y = LABELS[labels]
    g = torch.Generator().manual_seed(len(CASES) * top_k + y.numel())
    x = (torch.randn(y.numel(), 7, generator=g) * 0.6).to(dtype)
    options = dict(candidates=candidates, top_k=top_k, alpha=alpha, beta=beta, detach=detach)
    new = SymmetricalSynthesis(BASES[base](), **options)
    old = MaterialisedSymm(BASES[base](), **options)
    assert_same(loss_and_grad(new, x, y), loss_and_grad(old, x, y), f"{base} {labels} {candidates} {setting}")
    shortcut = top_k == 1 and candidates == "anchor" and new.base_loss.uses_nearest_negative_only
    # Which of two tied candidates is "chosen" is arbitrary: with alpha = 1 a synthetic point is the projection
    # of x_k on x_l, so in the cosine it ties exactly with x_l. The batch-hard shortcut counts one negative per
    # anchor, not one per anchor and class.
    if not shortcut and not (alpha == 1.0 and new.base_loss.metric.name == "cosine"):
        assert new.synthetic_ratio == pytest.approx(old.synthetic_ratio, abs=1e-6)
        assert new.last_stats["num_chosen_negatives"] == old.last_stats["num_chosen_negatives"]


@pytest.mark.parametrize("base", ["npair", "angular"])
@pytest.mark.parametrize("labels", ["4x2", "3x3-shuffled", "imbalanced", "singleton"])
@pytest.mark.parametrize(("alpha", "beta", "detach", "dtype"), [(2.0, 1.0, False, torch.float32),
                                                                (1.5, 0.7, True, torch.float32),
                                                                (2.0, 1.0, False, torch.float16),
                                                                (1.5, 0.7, True, torch.float16)])  # fmt: skip
def test_gram_official_equals_materialised(base, labels, alpha, beta, detach, dtype):
    # Not (alpha, beta) = (2, 1) with detach: the reflection makes A.S2 = P.S1 = A.P exactly, so several
    # combinations tie for the maximum; without detach they are the same function of A and P (same gradient),
    # with detach they are not, and which one wins a tie is rounding, not a property of either implementation.
    y = LABELS[labels]
    x = (torch.randn(y.numel(), 6, generator=torch.Generator().manual_seed(3)) * 0.5).to(dtype)
    options = dict(variant="official", alpha=alpha, beta=beta, detach=detach)
    new = SymmetricalSynthesis(BASES[base](), **options)
    old = MaterialisedSymm(BASES[base](), **options)
    assert_same(loss_and_grad(new, x, y), loss_and_grad(old, x, y), f"official {base} {labels}")
    assert new.synthetic_ratio == pytest.approx(old.synthetic_ratio, abs=1e-6)


class GeneralPathTriplet(TripletMarginLoss):
    uses_nearest_negative_only = False  # forces Symm's per-class grouping


@pytest.mark.parametrize("labels", list(LABELS))
@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine"])
def test_batch_hard_shortcut_equals_the_grouped_path(labels, distance):
    y = LABELS[labels]
    x = torch.randn(y.numel(), 5, generator=torch.Generator().manual_seed(y.numel()))
    fast = SymmetricalSynthesis(TripletMarginLoss(distance=distance))
    general = SymmetricalSynthesis(GeneralPathTriplet(distance=distance))
    assert_same(loss_and_grad(fast, x, y), loss_and_grad(general, x, y), f"shortcut {labels} {distance}")


class MatrixProducts(TorchDispatchMode):
    """Records the reduction length of every matrix product dispatched."""

    def __init__(self) -> None:
        super().__init__()
        self.inner_sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in ("mm", "addmm", "bmm", "baddbmm", "matmul", "dot", "mv"):
            first = args[1] if name in ("addmm", "baddbmm") else args[0]
            self.inner_sizes.append(int(first.shape[-1]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("candidates", ["anchor", "pair"])
@pytest.mark.parametrize("base", ["triplet-hard", "npair", "lifted", "angular", "contrastive"])
def test_one_n_by_d_product_per_forward(base, candidates):
    D = 97  # no other size of the batch equals it
    y = torch.arange(8).repeat_interleave(2)
    x = torch.randn(16, D, requires_grad=True)
    symm = SymmetricalSynthesis(BASES[base](), candidates=candidates)
    with MatrixProducts() as products:
        symm(x, y)
    assert products.inner_sizes.count(D) == 1, products.inner_sizes


def test_statistics_are_plain_floats_on_every_loss():
    y = torch.arange(4).repeat_interleave(2)
    x = torch.randn(8, 5)
    for loss in [make() for make in BASES.values()] + [SymmetricalSynthesis(NPairLoss())]:
        assert loss.last_stats == {}
        loss(x, y)
        assert loss.last_stats and all(type(v) is float for v in loss.last_stats.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("base", ["triplet-hard", "npair", "lifted", "angular", "contrastive"])
@pytest.mark.parametrize("candidates", ["anchor", "pair"])
def test_gram_symm_on_cuda_equals_materialised_on_cpu(base, candidates):
    y = torch.arange(16).repeat_interleave(4)
    x0 = torch.randn(y.shape[0], 128, generator=torch.Generator().manual_seed(3))
    old = loss_and_grad(MaterialisedSymm(BASES[base](), candidates=candidates, top_k=2), x0, y)
    new_loss = SymmetricalSynthesis(BASES[base](), candidates=candidates, top_k=2)
    loss, grad = loss_and_grad(new_loss, x0.cuda(), y.cuda())
    assert_same((loss.cpu(), grad.cpu()), old, f"cuda {base} {candidates}")
