"""Angular loss in its N-pair form (Wang et al. 2017)."""

from __future__ import annotations

import itertools
import math

import torch

from centrum.losses._masks import Negatives, _log1p_sum_exp, _masked_mean, first_pair_rows, same_class_mask
from centrum.losses.npair import _NPairForm

__all__ = ["AngularLoss", "angular_from_negatives"]


def angular_from_negatives(
    x: torch.Tensor,
    mat: torch.Tensor,
    labels: torch.Tensor,
    negatives: Negatives,
    alpha: float = 45.0,
    pairs: str = "first",
) -> torch.Tensor:
    """Angular loss, N-pair form (Wang et al. 2017, eq. 8), on inner products.

    ``f_apn = 4 tan^2(alpha) (x_a + x_p) . x_n - 2 (1 + tan^2(alpha)) x_a . x_p`` and
    ``L = mean_(a,p) log(1 + sum_n exp(f_apn))`` over the (anchor, positive) pairs of ``pairs`` (as in
    :func:`npair_from_negatives`). ``alpha`` is in degrees. The term ``(x_a + x_p) . x_n`` is linear in the
    inner products of the batch with the candidates, ``negatives.inner`` (``x @ x.T`` when ``None``), so the
    negative points themselves are never needed.
    """
    t2 = math.tan(math.radians(alpha)) ** 2
    G = x @ x.T if negatives.inner is None else negatives.inner  # sample x candidate inner products
    # every row (or row pair) computed and the anchors' averaged, in static shapes
    idx = negatives.index  # N x S
    with_anchor = G.gather(1, idx)  # (x_a . x_n) for every row a and its negatives
    if pairs == "first":
        is_anchor, partner, _ = first_pair_rows(labels)
        with_positive = G.index_select(0, partner).gather(1, idx)
        f = 4 * t2 * (with_anchor + with_positive) - 2 * (1 + t2) * mat.gather(1, partner.unsqueeze(1))
        return _masked_mean(_log1p_sum_exp(f, negatives.mask), is_anchor)
    if pairs == "all":
        pos_mask = same_class_mask(labels)
        N, S = idx.shape
        # [a, p, s]: x_p . (negative s of anchor a)
        with_positive = G.index_select(1, idx.reshape(-1)).view(G.shape[0], N, S).transpose(0, 1)
        f = 4 * t2 * (with_anchor.unsqueeze(1) + with_positive) - 2 * (1 + t2) * mat.unsqueeze(2)
        per_pair = _log1p_sum_exp(f, negatives.mask.unsqueeze(1).expand_as(f))
        return _masked_mean(per_pair, pos_mask)
    raise ValueError(f"unknown pairs {pairs!r}; choose 'first' or 'all'")


class AngularLoss(_NPairForm):
    """Angular loss in its N-pair form (Wang et al. 2017) with angle ``alpha`` in degrees.

    ``log(1 + sum_n exp(4 tan^2(alpha) (x_a + x_p) . x_n - 2 (1 + tan^2(alpha)) x_a . x_p))``, averaged over
    the (anchor, positive) pairs chosen as in :class:`NPairLoss`. Defaults: ``alpha=45``, inner product not
    normalised (the Symm paper's setting; Wang et al. and pytorch-metric-learning normalise, pass
    ``normalize=True``).
    """

    def __init__(self, alpha: float = 45.0, pairs: str = "first", normalize: bool = False) -> None:
        super().__init__(pairs, normalize)
        if not 0.0 < alpha < 90.0:
            raise ValueError(f"alpha must be an angle in degrees in (0, 90), got {alpha}")
        self.alpha = float(alpha)

    uses_candidate_inner = True  # its negative term is linear in the anchor and positive inner products

    official_combinations = tuple(itertools.permutations(range(4), 2))

    def official_logits(self, products: torch.Tensor) -> torch.Tensor:
        """Per ordered pair of sets ``(X, Y)``: ``4 tan^2 (X_i + Y_i) . Y_j`` off the diagonal and
        ``2 (1 + tan^2) X_i . Y_i`` on it (the authors' code)."""
        t2 = math.tan(math.radians(self.alpha)) ** 2
        n = products.shape[-1]
        eye = torch.eye(n, dtype=torch.bool, device=products.device)
        # integer indices give views: no index tensor is copied to the device
        xy = torch.stack([products[s, t] for s, t in self.official_combinations])  # combinations x n x n
        yy = torch.stack([products[t, t] for _, t in self.official_combinations])
        return torch.where(eye, 2 * (1 + t2) * xy, 4 * t2 * (xy + yy))

    def loss_from_negatives(self, x, mat, labels, negatives):
        return angular_from_negatives(x, mat, labels, negatives, self.alpha, self.pairs)
