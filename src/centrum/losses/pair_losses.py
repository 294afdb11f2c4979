"""Pair-based metric-learning losses: contrastive, triplet, N-pair, lifted structure and angular.

Each is an ``nn.Module`` called as ``loss(embeddings, labels)`` on N x D embeddings (float32 or float16,
computed in float32) and N integer labels, returning a differentiable scalar. All share
:class:`PairLoss`, which splits a loss into *prepare* (normalise), *matrix* (distances or similarities)
and *loss_from_negatives*; :class:`~centrum.losses.SymmetricalSynthesis` reuses the first two and swaps
the negatives.
"""

from __future__ import annotations

import torch
from torch import nn

from centrum.distances import check_metric, l2_normalize, pairwise_distance, pairwise_similarity
from centrum.losses import functional as LF
from centrum.validation import check_embeddings_labels

__all__ = [
    "AngularLoss",
    "ContrastiveLoss",
    "LiftedStructureLoss",
    "NPairLoss",
    "PairLoss",
    "TripletMarginLoss",
    "check_pair_batch",
]


def check_pair_batch(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a batch for a loss that needs negatives: shapes, finiteness, and at least two classes."""
    e, lab = check_embeddings_labels(embeddings, labels)
    if bool((lab == lab[0]).all()):
        raise ValueError(
            f"labels hold a single class ({int(lab[0])}) for all {lab.shape[0]} samples; "
            "the loss needs negatives, so a batch must contain at least two classes"
        )
    return e, lab


class PairLoss(nn.Module):
    """Base of the pair-based losses: a loss computed from an anchor-vs-batch matrix and per-anchor negatives.

    Subclasses set ``uses_similarity`` (True when the matrix holds similarities, larger = closer) and
    implement :meth:`loss_from_negatives`; :meth:`forward` builds the default negatives (every sample of
    another class, or what the loss's definition prescribes).
    """

    uses_similarity: bool = False

    def __init__(self, distance: str = "euclidean", normalize: bool = True) -> None:
        super().__init__()
        self.distance = check_metric(distance)
        self.normalize = bool(normalize)

    def prepare(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The embeddings the loss works on: float32, L2-normalised if ``normalize``."""
        return l2_normalize(embeddings) if self.normalize else embeddings.float()

    def matrix(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Distances (or similarities, for similarity-based losses) between the rows of ``x`` and ``y``."""
        if self.uses_similarity:
            return pairwise_similarity(x, y, self.distance)
        return pairwise_distance(x, y, self.distance)

    def default_negatives(self, mat: torch.Tensor, labels: torch.Tensor) -> LF.Negatives:
        """The negatives of the loss's published definition: all samples of other classes."""
        return LF.all_negatives(mat, labels)

    def anchor_rows(self, labels: torch.Tensor) -> torch.Tensor:
        """Boolean N: which samples act as anchors (used by Symm's statistics)."""
        return LF.same_class_mask(labels).any(dim=1)

    def loss_from_negatives(
        self, x: torch.Tensor, mat: torch.Tensor, labels: torch.Tensor, negatives: LF.Negatives
    ) -> torch.Tensor:
        """The loss value given the prepared batch, its matrix and the per-anchor negatives."""
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of a batch of N embeddings (N x D) with N integer labels; a scalar tensor."""
        e, lab = check_pair_batch(embeddings, labels)
        x = self.prepare(e)
        mat = self.matrix(x)
        return self.loss_from_negatives(x, mat, lab, self.default_negatives(mat, lab))


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
        return LF.contrastive_from_negatives(mat, labels, negatives, self.pos_margin, self.neg_margin, self.average)


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

    def loss_from_negatives(self, x, mat, labels, negatives):
        return LF.triplet_from_negatives(mat, labels, negatives, self.margin, self.mining, self.soft_margin)


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
        return LF.lifted_structure_from_negatives(mat, labels, negatives, self.neg_margin, self.pos_margin)


class _NPairForm(PairLoss):
    uses_similarity = True

    def __init__(self, pairs: str, normalize: bool) -> None:
        super().__init__("dot", normalize)
        if pairs not in ("first", "all"):
            raise ValueError(f"unknown pairs {pairs!r}; choose 'first' or 'all'")
        self.pairs = pairs

    def default_negatives(self, mat, labels):
        if self.pairs == "first":
            # Sohn's N pairs: the negatives of anchor i are the positives of the other classes' pairs
            _, positives = LF.first_pairs(labels)
            return LF.all_negatives(mat, labels, columns=positives)
        return LF.all_negatives(mat, labels)

    def anchor_rows(self, labels):
        if self.pairs == "first":
            rows = torch.zeros(labels.shape[0], dtype=torch.bool, device=labels.device)
            rows[LF.first_pairs(labels)[0]] = True
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

    def loss_from_negatives(self, x, mat, labels, negatives):
        return LF.npair_from_negatives(x, mat, labels, negatives, self.l2_reg, self.pairs)


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

    def loss_from_negatives(self, x, mat, labels, negatives):
        return LF.angular_from_negatives(x, mat, labels, negatives, self.alpha, self.pairs)
