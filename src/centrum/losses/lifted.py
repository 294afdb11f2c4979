"""Lifted structured embedding loss (Song et al. 2016), smooth form."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from centrum.losses._masks import Negatives, _masked_mean, same_class_mask
from centrum.losses.base import PairLoss

__all__ = ["LiftedStructureLoss", "lifted_structure_from_negatives"]


def lifted_structure_from_negatives(
    mat: torch.Tensor, labels: torch.Tensor, negatives: Negatives, neg_margin: float = 1.0, pos_margin: float = 0.0
) -> torch.Tensor:
    """Lifted structured loss, smooth form (Song et al. 2016, eq. 4).

    For each positive pair ``(i, j)``: ``J_ij = log(sum_{k in N(i)} exp(neg_margin - D_ik) +
    sum_{l in N(j)} exp(neg_margin - D_jl)) + D_ij - pos_margin`` and ``L = 1/(2|P|) sum relu(J_ij)^2`` over
    the unordered positive pairs, computed as the mean of ``relu(J)^2 / 2`` over ordered pairs.
    """
    pos_mask = same_class_mask(labels)
    neg_terms = (neg_margin - negatives.values).masked_fill(~negatives.mask, float("-inf"))
    # an anchor without negatives has log(0) = -inf here; a very negative finite stand-in gives the same zero
    # hinge without the NaN gradient of logaddexp(-inf, -inf)
    per_anchor = torch.logsumexp(neg_terms, dim=1).clamp_min(-1e30)
    # every (i, j) at once, averaged over the positive pairs: no data-dependent shape
    J = torch.logaddexp(per_anchor.unsqueeze(1), per_anchor.unsqueeze(0)) + mat - pos_margin
    return _masked_mean(F.relu(J) ** 2, pos_mask) / 2.0


class LiftedStructureLoss(PairLoss):
    """Lifted structured embedding loss, smooth log-sum-exp form (Song et al. 2016).

    Defaults: ``neg_margin=1`` (the paper's alpha), ``pos_margin=0``, L2-normalised Euclidean distance.
    """

    def __init__(
        self, neg_margin: float = 1.0, pos_margin: float = 0.0, distance: str = "euclidean", normalize: bool = True
    ) -> None:
        super().__init__(distance, normalize)
        self.neg_margin, self.pos_margin = float(neg_margin), float(pos_margin)

    def loss_from_negatives(self, x, mat, labels, negatives):
        return lifted_structure_from_negatives(mat, labels, negatives, self.neg_margin, self.pos_margin)
