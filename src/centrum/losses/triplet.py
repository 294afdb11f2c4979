"""Triplet margin loss with batch-hard, semi-hard or all-triplet mining."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from centrum.losses._masks import Negatives, _masked_mean, same_class_mask
from centrum.losses.base import PairLoss
from centrum.losses.mining import hardest_negative, hardest_positive, semihard_negative

__all__ = ["TripletMarginLoss", "triplet_from_negatives"]


def triplet_from_negatives(
    mat: torch.Tensor,
    labels: torch.Tensor,
    negatives: Negatives,
    margin: float = 0.2,
    mining: str = "hard",
    soft_margin: bool = False,
) -> torch.Tensor:
    """Triplet margin loss ``f(d_ap - d_an)`` with ``f = relu(. + margin)`` or, with ``soft_margin``,
    ``softplus(.)`` (Hermans et al. 2017).

    ``mining="hard"``: per anchor the hardest positive and hardest negative (batch-hard), averaged over
    anchors that have both (0, still in the graph, when none has). ``"semihard"``: per anchor-positive pair
    the semi-hard negative of :func:`~centrum.losses.mining.semihard_negative`, averaged over pairs.
    ``"all"``: every valid triplet, averaged over the triplets with non-zero loss.
    """

    def f(z: torch.Tensor) -> torch.Tensor:
        return F.softplus(z) if soft_margin else F.relu(z + margin)

    pos_mask = same_class_mask(labels)
    if mining == "hard":
        d_ap, has_pos = hardest_positive(mat, pos_mask)
        d_an, has_neg = hardest_negative(negatives.values, negatives.mask)
        # masked means, not boolean indexing: no shape depends on the data, so nothing waits on the device
        return _masked_mean(f(d_ap - d_an), has_pos & has_neg)
    if mining == "semihard":
        d_an, has_neg = semihard_negative(mat, negatives.values, negatives.mask)
        return _masked_mean(f(mat - d_an), pos_mask & has_neg)
    if mining == "all":
        losses = f(mat.unsqueeze(2) - negatives.values.unsqueeze(1))  # anchor x positive x negative
        valid = pos_mask.unsqueeze(2) & negatives.mask.unsqueeze(1)
        return _masked_mean(losses, valid & (losses > 0))
    raise ValueError(f"unknown mining {mining!r}; choose 'hard', 'semihard' or 'all'")


class TripletMarginLoss(PairLoss):
    """Triplet margin loss ``max(0, d(a, p) - d(a, n) + margin)`` with in-batch mining.

    ``mining="hard"`` (batch-hard, Hermans et al. 2017), ``"semihard"`` (Schroff et al. 2015, per
    anchor-positive pair the nearest negative farther than the positive) or ``"all"`` (every valid
    triplet, averaged over those with non-zero loss). ``soft_margin=True`` uses ``softplus(d_ap - d_an)``.
    Defaults: margin 0.2 on L2-normalised Euclidean distance (FaceNet's margin on the unit sphere, and the
    Symm paper's L2-normalised setting). The CTL recipe passes ``margin=0.3, normalize=False``.
    """

    def __init__(
        self,
        margin: float = 0.2,
        mining: str = "hard",
        soft_margin: bool = False,
        distance: str = "euclidean",
        normalize: bool = True,
    ) -> None:
        super().__init__(distance, normalize)
        if mining not in ("hard", "semihard", "all"):
            raise ValueError(f"unknown mining {mining!r}; choose 'hard', 'semihard' or 'all'")
        self.margin, self.mining, self.soft_margin = float(margin), mining, bool(soft_margin)

    @property
    def uses_nearest_negative_only(self) -> bool:
        """Batch-hard mining uses each anchor's closest negative only."""
        return self.mining == "hard"

    def loss_from_negatives(self, x, mat, labels, negatives):
        return triplet_from_negatives(mat, labels, negatives, self.margin, self.mining, self.soft_margin)
