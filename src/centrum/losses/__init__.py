"""Metric-learning losses: the pair-based losses, Centroid Triplet Loss, the CTL model's classification
losses, and Symmetrical Synthesis as a plug-in for any pair-based loss.

Every batch loss is an ``nn.Module`` called as ``loss(embeddings, labels)`` (N x D embeddings, N integer
labels) and returns a differentiable scalar computed in float32, and reports per-call statistics in
``last_stats`` (a ``{name: float}`` dict). One module per loss family, each loss next to its pure function:
:mod:`~centrum.losses.contrastive`, :mod:`~centrum.losses.triplet`, :mod:`~centrum.losses.lifted`,
:mod:`~centrum.losses.npair`, :mod:`~centrum.losses.angular` (on :class:`PairLoss`, :mod:`~centrum.losses.base`),
:mod:`~centrum.losses.synthesis` (Symm), :mod:`~centrum.losses.centroid_triplet`,
:mod:`~centrum.losses.classification`; :mod:`centrum.losses.functional` gathers the pure functions and
:mod:`centrum.losses.mining` holds the mining helpers.
"""

from centrum.losses import functional
from centrum.losses._masks import Negatives
from centrum.losses.angular import AngularLoss
from centrum.losses.base import PairLoss, ReportsStats
from centrum.losses.centroid_triplet import CentroidTripletLoss, centroid_triplet_loss
from centrum.losses.classification import CenterLoss, CrossEntropyLabelSmooth
from centrum.losses.contrastive import ContrastiveLoss
from centrum.losses.lifted import LiftedStructureLoss
from centrum.losses.mining import hardest_negative, hardest_positive, semihard_negative, topk_hardest
from centrum.losses.npair import NPairLoss
from centrum.losses.registry import LOSSES, build_loss
from centrum.losses.synthesis import SymmetricalSynthesis, symmetric_reflection
from centrum.losses.triplet import TripletMarginLoss

__all__ = [
    "LOSSES",
    "AngularLoss",
    "CenterLoss",
    "CentroidTripletLoss",
    "ContrastiveLoss",
    "CrossEntropyLabelSmooth",
    "LiftedStructureLoss",
    "NPairLoss",
    "Negatives",
    "PairLoss",
    "ReportsStats",
    "SymmetricalSynthesis",
    "TripletMarginLoss",
    "build_loss",
    "centroid_triplet_loss",
    "functional",
    "hardest_negative",
    "hardest_positive",
    "semihard_negative",
    "symmetric_reflection",
    "topk_hardest",
]
