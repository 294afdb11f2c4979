"""Multi-class N-pair loss (Sohn 2016), and the N-pair form shared with the angular loss."""

from __future__ import annotations

import itertools

import torch

from centrum.losses._masks import Negatives, _log1p_sum_exp, _masked_mean, first_pair_rows, same_class_mask
from centrum.losses.base import PairLoss

__all__ = ["NPairLoss", "npair_from_negatives"]


def npair_from_negatives(
    x: torch.Tensor,
    mat: torch.Tensor,
    labels: torch.Tensor,
    negatives: Negatives,
    l2_reg: float = 0.002,
    pairs: str = "first",
) -> torch.Tensor:
    """Multi-class N-pair loss (Sohn 2016) on similarities ``mat``, plus its L2 penalty on embeddings.

    ``pairs="first"``: one (anchor, positive) pair per class (:func:`first_pairs`),
    ``L = mean_i log(1 + sum_n exp(s_in - s_ip)) + l2_reg/4 * (mean ||a||^2 + mean ||p||^2)`` (the
    regulariser as in TensorFlow's ``npairs_loss``); without Symm the negatives of anchor ``i`` are the
    positives of the other classes' pairs. ``pairs="all"``: every ordered positive pair, every other-class
    sample a negative, penalty ``l2_reg/2 * mean ||x||^2`` over the samples in a pair.
    """
    # every row computed, the anchors' rows averaged (masked means): no shape depends on the labels
    sq_norms = (x * x).sum(1)
    if pairs == "first":
        is_anchor, partner, is_positive = first_pair_rows(labels)
        z = negatives.values - mat.gather(1, partner.unsqueeze(1))
        ce = _masked_mean(_log1p_sum_exp(z, negatives.mask), is_anchor)
        reg = 0.25 * l2_reg * (_masked_mean(sq_norms, is_anchor) + _masked_mean(sq_norms, is_positive))
        return ce + reg
    if pairs == "all":
        pos_mask = same_class_mask(labels)
        z = negatives.values.unsqueeze(1) - mat.unsqueeze(2)  # anchor x positive x negative
        per_pair = _log1p_sum_exp(z, negatives.mask.unsqueeze(1).expand_as(z))
        reg = 0.5 * l2_reg * _masked_mean(sq_norms, pos_mask.any(dim=1))
        return _masked_mean(per_pair, pos_mask) + reg
    raise ValueError(f"unknown pairs {pairs!r}; choose 'first' or 'all'")


class _NPairForm(PairLoss):
    """The N-pair form: inner-product similarities, one (anchor, positive) pair per class or every pair."""

    def __init__(self, pairs: str, normalize: bool) -> None:
        super().__init__("dot", normalize, similarity=True)
        if pairs not in ("first", "all"):
            raise ValueError(f"unknown pairs {pairs!r}; choose 'first' or 'all'")
        self.pairs = pairs

    def default_negatives(self, mat, labels):
        negatives = super().default_negatives(mat, labels)
        if self.pairs == "first":
            # Sohn's N pairs: the negatives of anchor i are the positives of the other classes' pairs (a mask
            # over every column rather than a column subset: static shapes)
            is_positive = first_pair_rows(labels)[2]
            return negatives._replace(mask=negatives.mask & is_positive.unsqueeze(0))
        return negatives

    def anchor_rows(self, labels):
        if self.pairs == "first":
            return first_pair_rows(labels)[0]
        return super().anchor_rows(labels)


class NPairLoss(_NPairForm):
    """Multi-class N-pair loss (Sohn 2016) with its L2 penalty on the embeddings, on inner products.

    ``pairs="first"`` (default, Sohn): one (anchor, positive) pair per class, its first two samples in batch
    order; the other classes' positives are the negatives. ``pairs="all"``: every ordered positive pair,
    every other-class sample a negative. ``l2_reg=0.002`` with TensorFlow ``npairs_loss``'s factor 1/4.
    Defaults follow the Symm paper's setting: inner product, not normalised.
    """

    def __init__(self, l2_reg: float = 0.002, pairs: str = "first", normalize: bool = False) -> None:
        super().__init__(pairs, normalize)
        self.l2_reg = float(l2_reg)

    official_combinations = tuple(itertools.combinations(range(4), 2))

    def official_logits(self, products: torch.Tensor) -> torch.Tensor:
        """Per unordered pair of sets ``(X, Y)`` (earlier set on rows): ``X Y^T``."""
        # integer indices give views: no index tensor is copied to the device
        return torch.stack([products[s, t] for s, t in self.official_combinations])

    def official_regularizer(self, products: torch.Tensor) -> torch.Tensor:
        """``l2_reg / 4 (mean |a|^2 + mean |p|^2)``, from the diagonals of the anchor and positive Grams."""
        sq = products[[0, 1], [0, 1]].diagonal(dim1=-2, dim2=-1)  # 2 x n
        return 0.25 * self.l2_reg * sq.mean(1).sum()

    def loss_from_negatives(self, x, mat, labels, negatives):
        return npair_from_negatives(x, mat, labels, negatives, self.l2_reg, self.pairs)
