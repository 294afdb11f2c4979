"""The pair-based losses in one namespace (kept for compatibility; each lives in its own module)."""

from centrum.losses.angular import AngularLoss
from centrum.losses.base import PairLoss, check_pair_batch
from centrum.losses.contrastive import ContrastiveLoss
from centrum.losses.lifted import LiftedStructureLoss
from centrum.losses.npair import NPairLoss
from centrum.losses.triplet import TripletMarginLoss

__all__ = [
    "AngularLoss",
    "ContrastiveLoss",
    "LiftedStructureLoss",
    "NPairLoss",
    "PairLoss",
    "TripletMarginLoss",
    "check_pair_batch",
]
