"""Contrastive loss (Hadsell et al. 2006) in the positive/negative margin form."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from centrum.losses._masks import Negatives, _masked_mean, same_class_mask
from centrum.losses.base import PairLoss

__all__ = ["ContrastiveLoss", "contrastive_from_negatives"]


def contrastive_from_negatives(
    mat: torch.Tensor,
    labels: torch.Tensor,
    negatives: Negatives,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    average: str = "all",
) -> torch.Tensor:
    """Contrastive loss: ``relu(d_ap - pos_margin)`` over ordered positive pairs plus ``relu(neg_margin - d_an)``
    over the negatives, each term averaged separately (``average="all"``: over all its pairs;
    ``"nonzero"``: over its pairs with non-zero loss, pytorch-metric-learning's default) and summed."""
    pos_mask = same_class_mask(labels)
    pos_terms = F.relu(mat - pos_margin)
    neg_terms = F.relu(neg_margin - negatives.values)
    if average == "nonzero":
        pos_mask = pos_mask & (pos_terms > 0)
        neg_mask = negatives.mask & (neg_terms > 0)
    else:
        neg_mask = negatives.mask
    return _masked_mean(pos_terms, pos_mask) + _masked_mean(neg_terms, neg_mask)


class ContrastiveLoss(PairLoss):
    """Contrastive loss with a positive and a negative margin (Hadsell et al. 2006, in the
    ``pos_margin``/``neg_margin`` form of Musgrave et al. 2020).

    ``mean_{pos} relu(d_ap - pos_margin) + mean_{neg} relu(neg_margin - d_an)`` over ordered pairs.
    Defaults: margins 0 and 1 on L2-normalised Euclidean distance (pytorch-metric-learning's defaults);
    ``average="nonzero"`` averages each term over its non-zero pairs instead, as pytorch-metric-learning does.
    """

    def __init__(
        self,
        pos_margin: float = 0.0,
        neg_margin: float = 1.0,
        distance: str = "euclidean",
        normalize: bool = True,
        average: str = "all",
    ) -> None:
        super().__init__(distance, normalize)
        if average not in ("all", "nonzero"):
            raise ValueError(f"unknown average {average!r}; choose 'all' or 'nonzero'")
        self.pos_margin, self.neg_margin, self.average = float(pos_margin), float(neg_margin), average

    def loss_from_negatives(self, x, mat, labels, negatives):
        return contrastive_from_negatives(mat, labels, negatives, self.pos_margin, self.neg_margin, self.average)
