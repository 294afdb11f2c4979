"""Metric-learning losses: the pair-based losses, Centroid Triplet Loss, the CTL model's classification
losses, and Symmetrical Synthesis as a plug-in for any pair-based loss.

Every batch loss is an ``nn.Module`` called as ``loss(embeddings, labels)`` (N x D embeddings, N integer
labels) and returns a differentiable scalar computed in float32. :mod:`centrum.losses.functional` holds the
pure tensor functions behind them, :mod:`centrum.losses.mining` the reusable mining helpers.
"""

from centrum.losses import functional
from centrum.losses.centroid import CenterLoss, CentroidTripletLoss, CrossEntropyLabelSmooth
from centrum.losses.functional import Negatives, centroid_triplet_loss, symmetric_reflection
from centrum.losses.mining import hardest_negative, hardest_positive, semihard_negative, topk_hardest
from centrum.losses.pair_losses import (
    AngularLoss,
    ContrastiveLoss,
    LiftedStructureLoss,
    NPairLoss,
    PairLoss,
    TripletMarginLoss,
)
from centrum.losses.registry import LOSSES, build_loss
from centrum.losses.symm import SymmetricalSynthesis

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
