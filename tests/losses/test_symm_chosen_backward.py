"""The hand-written backward of Symm's per-anchor fast path (``_ChosenCandidates``: the chosen candidates'
inner products with their anchor and their squared norms as functions of the Gram matrix) against finite
differences, in float64, for originals and synthetic points, several (alpha, beta) (``alpha = 1`` makes the
source coefficient 0), balanced and imbalanced batches, one and several chosen candidates per anchor."""

from __future__ import annotations

import pytest
import torch

from centrum.losses.synthesis import _candidate_table, _ChosenCandidates, _Layout

LABELS = {
    "4x2": torch.arange(4).repeat_interleave(2),
    "imbalanced": torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3]),
}


def chosen(G: torch.Tensor, layout: _Layout, index: torch.Tensor, alpha: float, beta: float):
    inner, sq, W = _candidate_table(G.detach(), layout, alpha, beta)  # recomputed at every perturbed G
    fast = layout.fast()
    return _ChosenCandidates.apply(G, inner, sq, W, index, fast["i2"], fast["positions"], fast["row_offset"])


@pytest.mark.parametrize("labels", list(LABELS))
@pytest.mark.parametrize(("alpha", "beta"), [(2.0, 1.0), (1.5, 0.8), (1.0, 1.0), (0.5, 1.2)])
@pytest.mark.parametrize("slots", [1, 5])
def test_chosen_candidates_gradcheck(labels, alpha, beta, slots):
    y = LABELS[labels]
    N = y.shape[0]
    gen = torch.Generator().manual_seed(N + slots)
    x = torch.randn(N, 6, generator=gen, dtype=torch.float64)
    # a non-symmetric G: the function must be the derivative of what its forward computes, entry by entry
    G = (x @ x.T + 0.1 * torch.randn(N, N, generator=gen, dtype=torch.float64)).requires_grad_(True)
    layout = _Layout(y)
    index = torch.randint(0, layout.size, (N, slots), generator=gen)
    index[0, 0], index[1, 0] = 0, layout.size - 1  # an original and a synthetic point at least
    assert torch.autograd.gradcheck(lambda g: chosen(g, layout, index, alpha, beta), (G,))


def test_chosen_candidates_match_their_definition():
    """The forward values: ``c1 G[a, k] + c2 G[a, l]`` and ``|c1 x_k + c2 x_l|^2`` built from the points."""
    y = LABELS["imbalanced"]
    x = torch.randn(y.shape[0], 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    layout = _Layout(y)
    index = torch.arange(layout.size).expand(y.shape[0], -1)
    inner, sq = chosen(x @ x.T, layout, index, 1.5, 0.8)
    c2 = 1.5 * 0.8 * (x[layout.source] * x[layout.axis]).sum(1) / (x[layout.axis] ** 2).sum(1)
    points = torch.cat([x, 0.8 * (1 - 1.5) * x[layout.source] + c2.unsqueeze(1) * x[layout.axis]])
    torch.testing.assert_close(inner, x @ points.T)
    torch.testing.assert_close(sq, (points**2).sum(1).expand_as(sq))
