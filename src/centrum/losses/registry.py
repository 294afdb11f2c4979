"""A name -> class registry of the batch losses, and :func:`build_loss`, which the training code calls."""

from __future__ import annotations

from typing import Any

from torch import nn

from centrum.losses.angular import AngularLoss
from centrum.losses.base import PairLoss
from centrum.losses.centroid_triplet import CentroidTripletLoss
from centrum.losses.contrastive import ContrastiveLoss
from centrum.losses.lifted import LiftedStructureLoss
from centrum.losses.npair import NPairLoss
from centrum.losses.synthesis import SymmetricalSynthesis
from centrum.losses.triplet import TripletMarginLoss

__all__ = ["LOSSES", "build_loss"]

LOSSES: dict[str, type[nn.Module]] = {
    "contrastive": ContrastiveLoss,
    "triplet": TripletMarginLoss,
    "npair": NPairLoss,
    "lifted": LiftedStructureLoss,
    "angular": AngularLoss,
    "centroid_triplet": CentroidTripletLoss,
}


def build_loss(name: str, symm: bool = False, symm_options: dict[str, Any] | None = None, **kwargs: Any) -> nn.Module:
    """Build the loss registered as ``name`` with ``kwargs``; with ``symm=True`` wrap it in
    :class:`SymmetricalSynthesis` built with ``symm_options`` (pair-based losses only)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(sorted(LOSSES))}")
    try:
        loss = LOSSES[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad options for loss {name!r}: {exc}") from exc
    if not symm:
        if symm_options:
            raise ValueError(f"symm_options {sorted(symm_options)} given but symm=False")
        return loss
    if not isinstance(loss, PairLoss):
        raise ValueError(f"Symmetrical Synthesis applies to pair-based losses only, not {name!r}")
    try:
        return SymmetricalSynthesis(loss, **(symm_options or {}))
    except TypeError as exc:
        raise ValueError(f"bad symm_options {symm_options}: {exc}") from exc
