"""The pure tensor functions behind the loss modules, gathered in one namespace (kept for compatibility).

Each function lives next to its loss: :mod:`~centrum.losses._masks` (masks, pairs, :class:`Negatives`),
:mod:`~centrum.losses.synthesis`, :mod:`~centrum.losses.contrastive`, :mod:`~centrum.losses.triplet`,
:mod:`~centrum.losses.lifted`, :mod:`~centrum.losses.npair`, :mod:`~centrum.losses.angular`,
:mod:`~centrum.losses.centroid_triplet` and :mod:`~centrum.losses.classification`.
"""

from centrum.distances import rowwise_distance
from centrum.losses._masks import (
    Negatives,
    all_negatives,
    class_index,
    first_pairs,
    ordered_positive_pairs,
    same_class_mask,
)
from centrum.losses.angular import angular_from_negatives
from centrum.losses.centroid_triplet import (
    _ctl_official_general,
    centroid_triplet_loss,
    check_centroid_batch,
)
from centrum.losses.classification import center_loss, label_smoothed_cross_entropy
from centrum.losses.contrastive import contrastive_from_negatives
from centrum.losses.lifted import lifted_structure_from_negatives
from centrum.losses.mining import hardest_negative, hardest_positive, semihard_negative
from centrum.losses.npair import npair_from_negatives
from centrum.losses.synthesis import symmetric_reflection, synthesize_pairs
from centrum.losses.triplet import triplet_from_negatives

__all__ = [
    "Negatives",
    "_ctl_official_general",
    "all_negatives",
    "angular_from_negatives",
    "center_loss",
    "centroid_triplet_loss",
    "check_centroid_batch",
    "class_index",
    "contrastive_from_negatives",
    "first_pairs",
    "hardest_negative",
    "hardest_positive",
    "label_smoothed_cross_entropy",
    "lifted_structure_from_negatives",
    "npair_from_negatives",
    "ordered_positive_pairs",
    "rowwise_distance",
    "same_class_mask",
    "semihard_negative",
    "symmetric_reflection",
    "synthesize_pairs",
    "triplet_from_negatives",
]
