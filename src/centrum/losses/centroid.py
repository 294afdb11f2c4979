"""The losses of the CTL model in one namespace (kept for compatibility; see
:mod:`~centrum.losses.centroid_triplet` and :mod:`~centrum.losses.classification`)."""

from centrum.losses.centroid_triplet import CentroidTripletLoss
from centrum.losses.classification import CenterLoss, CrossEntropyLabelSmooth

__all__ = ["CenterLoss", "CentroidTripletLoss", "CrossEntropyLabelSmooth"]
