"""Multi-class N-pair loss (Sohn 2016), and the N-pair form shared with the angular loss."""

from __future__ import annotations

import itertools

import torch

from centrum.losses._masks import Negatives, _log1p_sum_exp, _zero_loss, all_negatives, first_pairs, same_class_mask
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
    if pairs == "first":
        a, p = first_pairs(labels)
        if a.numel() == 0:
            return _zero_loss(mat)
        z = negatives.values[a] - mat[a, p].unsqueeze(1)
        ce = _log1p_sum_exp(z, negatives.mask[a]).mean()
        reg = 0.25 * l2_reg * ((x[a] ** 2).sum(1).mean() + (x[p] ** 2).sum(1).mean())
        return ce + reg
    if pairs == "all":
        pos_mask = same_class_mask(labels)
        if not bool(pos_mask.any()):
            return _zero_loss(mat)
        z = negatives.values.unsqueeze(1) - mat.unsqueeze(2)  # anchor x positive x negative
        per_pair = _log1p_sum_exp(z, negatives.mask.unsqueeze(1).expand_as(z))
        in_pair = pos_mask.any(dim=1)
        reg = 0.5 * l2_reg * (x[in_pair] ** 2).sum(1).mean()
        return per_pair[pos_mask].mean() + reg
    raise ValueError(f"unknown pairs {pairs!r}; choose 'first' or 'all'")


class _NPairForm(PairLoss):
    """The N-pair form: inner-product similarities, one (anchor, positive) pair per class or every pair."""

    def __init__(self, pairs: str, normalize: bool) -> None:
        super().__init__("dot", normalize, similarity=True)
        if pairs not in ("first", "all"):
            raise ValueError(f"unknown pairs {pairs!r}; choose 'first' or 'all'")
        self.pairs = pairs

    def default_negatives(self, mat, labels):
        if self.pairs == "first":
            # Sohn's N pairs: the negatives of anchor i are the positives of the other classes' pairs
            _, positives = first_pairs(labels)
            return all_negatives(mat, labels, columns=positives)
        return all_negatives(mat, labels)

    def anchor_rows(self, labels):
        if self.pairs == "first":
            rows = torch.zeros(labels.shape[0], dtype=torch.bool, device=labels.device)
            rows[first_pairs(labels)[0]] = True
            return rows
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
        s, t = (torch.tensor(c, device=products.device) for c in zip(*self.official_combinations, strict=True))
        return products[s, t]

    def official_regularizer(self, products: torch.Tensor) -> torch.Tensor:
        """``l2_reg / 4 (mean |a|^2 + mean |p|^2)``, from the diagonals of the anchor and positive Grams."""
        sq = products[[0, 1], [0, 1]].diagonal(dim1=-2, dim2=-1)  # 2 x n
        return 0.25 * self.l2_reg * sq.mean(1).sum()

    def loss_from_negatives(self, x, mat, labels, negatives):
        return npair_from_negatives(x, mat, labels, negatives, self.l2_reg, self.pairs)
