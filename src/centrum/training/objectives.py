"""Training objectives: the sum of loss terms each recipe optimises, as ``nn.Module``\\ s.

An objective takes the model's output dict (``"raw"``, ``"bn"``, ``"logits"``, see
:class:`centrum.models.EmbeddingModel`) and the batch labels, and returns a dict of named loss terms
whose ``"loss"`` entry is the weighted total to back-propagate.
"""

from __future__ import annotations

import torch
from torch import nn

from centrum.losses import (
    CenterLoss,
    CentroidTripletLoss,
    CrossEntropyLabelSmooth,
    TripletMarginLoss,
    build_loss,
)
from centrum.losses.distributed import GatherAcrossRanks


def loss_statistics(loss: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """A loss's per-call statistics (every centrum loss records them, :attr:`~centrum.losses.ReportsStats.
    last_stats_tensors`) as loggable 0-d tensors named ``prefix + name``, left on their device: reading them
    does not make the host wait. Nothing for a module without statistics."""
    stats = getattr(loss, "last_stats_tensors", None) or {}
    return {
        # floating point (counts too): Lightning averages what it logs
        f"{prefix}{name}": value.detach().float() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
        for name, value in stats.items()
    }


def _check_layout(batch_layout: tuple[int, int] | None) -> tuple[int, int] | None:
    if batch_layout is None:
        return None
    p, m = (int(v) for v in batch_layout)
    if p < 1 or m < 1:
        raise ValueError(f"batch_layout must be (P classes, M samples per class) >= 1, got {batch_layout}")
    return p, m


def _layout_options(batch_layout: tuple[int, int] | None, labels: torch.Tensor) -> dict[str, int]:
    """``samples_per_class`` for a batch that has the P x M sampler's full size (so its class-major blocks); none
    for a shorter one (images skipped as unreadable), whose layout the losses read off the labels."""
    if batch_layout is not None and labels.shape[0] == batch_layout[0] * batch_layout[1]:
        return {"samples_per_class": batch_layout[1]}
    return {}


class CTLObjective(nn.Module):
    """The CTL model's objective (methods.md 1.2), all terms on the BNNeck model's outputs:

    label-smoothed cross-entropy on the classifier logits + batch-hard triplet on the raw feature +
    ``center_weight`` x center loss on the raw feature + ``centroid_weight`` x centroid triplet loss on
    the raw feature. ``centroid_weight=0`` is the strong-baseline (BNNeck) objective without centroids.
    The center loss's centers are optimised by their own SGD (see :attr:`center_loss`).

    ``gather_across_ranks=True`` computes the two batch terms that mine inside the batch (batch-hard triplet,
    centroid triplet) on the embeddings and labels of every rank
    (:class:`~centrum.losses.distributed.GatherAcrossRanks`); cross-entropy and center loss are per-sample
    and stay local. With one process it is the plain loss.

    ``batch_layout=(P, M)``: batches come from the P x M sampler (class-major blocks), which the batch losses
    then use instead of reading the class layout off the labels (see ``samples_per_class`` of the losses): with
    it, the objective never makes the host wait on the device and compiles whole (``torch.compile(...,
    fullgraph=True)``).
    """

    def __init__(
        self,
        num_classes: int,
        feat_dim: int,
        label_smoothing: float = 0.1,
        triplet_margin: float = 0.3,
        center_weight: float = 5e-4,
        centroid_weight: float = 1.0,
        centroid_margin: float = 0.5,
        centroid_variant: str = "paper",
        gather_across_ranks: bool = False,
        batch_layout: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.batch_layout = _check_layout(batch_layout)
        if num_classes < 2:
            raise ValueError(f"the CTL objective needs at least 2 training classes, got {num_classes}")
        self.cross_entropy = CrossEntropyLabelSmooth(num_classes, epsilon=label_smoothing)
        self.triplet = TripletMarginLoss(margin=triplet_margin, mining="hard", distance="euclidean", normalize=False)
        self.center_weight = center_weight
        self.center_loss = CenterLoss(num_classes, feat_dim) if center_weight > 0 else None
        self.centroid_weight = centroid_weight
        self.centroid_triplet = (
            CentroidTripletLoss(margin=centroid_margin, variant=centroid_variant) if centroid_weight > 0 else None
        )
        if gather_across_ranks:
            self.triplet = GatherAcrossRanks(self.triplet)
            if self.centroid_triplet is not None:
                self.centroid_triplet = GatherAcrossRanks(self.centroid_triplet)

    def forward(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms and their weighted sum ``"loss"`` for one P x M batch."""
        if outputs.get("logits") is None:
            raise ValueError("the CTL objective needs classifier logits: build the model with num_classes")
        raw = outputs["raw"]
        layout = _layout_options(self.batch_layout, labels)
        terms = {
            "cross_entropy": self.cross_entropy(outputs["logits"], labels),
            "triplet": self.triplet(raw, labels, **layout),
        }
        total = terms["cross_entropy"] + terms["triplet"]
        if self.center_loss is not None:
            terms["center"] = self.center_loss(raw, labels)
            total = total + self.center_weight * terms["center"]
        if self.centroid_triplet is not None:
            terms["centroid_triplet"] = self.centroid_triplet(raw, labels, **layout)
            total = total + self.centroid_weight * terms["centroid_triplet"]
        terms["loss"] = total
        for name in list(terms):  # every term's statistics, the same way whatever the loss
            module = getattr(self, name, None)
            if module is not None:
                terms.update(loss_statistics(module, prefix=f"{name}/"))
        return terms


class MetricObjective(nn.Module):
    """The metric-learning recipe's objective (methods.md 2.4): one pair-based loss on the embedding,
    optionally wrapped by :class:`~centrum.losses.SymmetricalSynthesis`.

    The loss's per-call statistics (``last_stats``: with Symm, ``"synthetic_ratio"``, the share of chosen
    negatives that were synthetic, and counts) are returned beside ``"loss"`` as plain numbers, not loss terms,
    so that they can be logged over training.

    ``gather_across_ranks=True`` computes the loss (Symm included) on the embeddings and labels of every rank
    (:class:`~centrum.losses.distributed.GatherAcrossRanks`); with one process it is the plain loss.
    ``batch_layout=(P, M)``: as in :class:`CTLObjective`.
    """

    def __init__(
        self,
        loss: str = "triplet",
        loss_options: dict | None = None,
        symm: bool = False,
        symm_options: dict | None = None,
        gather_across_ranks: bool = False,
        batch_layout: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.batch_layout = _check_layout(batch_layout)
        self.loss = build_loss(loss, symm=symm, symm_options=symm_options, **(loss_options or {}))
        if gather_across_ranks:
            self.loss = GatherAcrossRanks(self.loss)

    def backward_statistics(self) -> dict[str, torch.Tensor]:
        """The loss's statistics of the last backward pass (Symm: the share of *active* negatives that were
        synthetic), as 0-d tensors; read after ``backward()``."""
        stats = getattr(self.loss, "last_backward_stats", None) or {}
        return {name: value.detach().float() for name, value in stats.items()}

    def forward(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss on the embedding ``outputs["raw"]``, plus the loss's statistics."""
        terms = {"loss": self.loss(outputs["raw"], labels, **_layout_options(self.batch_layout, labels))}
        terms.update(loss_statistics(self.loss))
        return terms
