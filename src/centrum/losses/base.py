"""The contract of a pair-based loss (:class:`PairLoss`) and the statistics every loss reports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from centrum.distances import Metric, l2_normalize
from centrum.losses._masks import Negatives, all_negatives, same_class_mask
from centrum.validation import check_class_blocks, check_embeddings_labels, value_checks_enabled

__all__ = ["PairLoss", "ReportsStats", "check_pair_batch"]


def check_pair_batch(
    embeddings: torch.Tensor, labels: torch.Tensor, samples_per_class: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a batch for a loss that needs negatives: shapes, finiteness, at least two classes and, with
    ``samples_per_class``, the class-major block layout it declares (value checks only where
    :func:`~centrum.validation.value_checks_enabled`)."""
    e, lab = check_embeddings_labels(embeddings, labels)
    if samples_per_class is not None:
        check_class_blocks(lab, samples_per_class)
    if value_checks_enabled() and bool((lab == lab[0]).all()):
        raise ValueError(
            f"labels hold a single class ({int(lab[0])}) for all {lab.shape[0]} samples; "
            "the loss needs negatives, so a batch must contain at least two classes"
        )
    return e, lab


class ReportsStats:
    """Mixin: per-call statistics in :attr:`last_stats`, the same way for every loss.

    A loss records tensors, or a function that computes them, and reading :attr:`last_stats` turns them into
    plain floats: the training step pays for statistics (and their device syncs) only when it reads them.
    Empty before the first call.
    """

    _pending_stats: dict[str, Any] | Callable[[], dict[str, Any]]

    def record_stats(self, **values: Any) -> None:
        """Replace the statistics of the last call (tensors or numbers)."""
        self._pending_stats = values

    def record_stats_lazily(self, compute: Callable[[], dict[str, Any]]) -> None:
        """Replace the statistics of the last call by ``compute()``, run (without gradient) when read; at once
        when compiled (a compiled graph cannot hand out a closure over its intermediates)."""
        if torch.compiler.is_compiling():
            with torch.no_grad():
                self._pending_stats = compute()
        else:
            self._pending_stats = compute

    @property
    def last_stats_tensors(self) -> dict[str, torch.Tensor | float | int]:
        """The statistics of the last call as they were recorded (0-d tensors, left on their device, or numbers):
        reading them does not wait on the device, as :attr:`last_stats` does."""
        stats = getattr(self, "_pending_stats", {})
        if not isinstance(stats, dict):  # a deferred computation (isinstance, not callable: compile traces it)
            with torch.no_grad():
                stats = self._pending_stats = stats()
        return dict(stats)

    @property
    def last_stats(self) -> dict[str, float]:
        """The statistics of the last call, as ``{name: float}``."""
        return {name: float(value) for name, value in self.last_stats_tensors.items()}


class PairLoss(ReportsStats, nn.Module):
    """Base of the pair-based losses: a loss computed from an anchor-vs-batch matrix and per-anchor negatives.

    The public contract that :class:`~centrum.losses.SymmetricalSynthesis` relies on, and nothing else:

    - :meth:`prepare` (float32, optional L2 normalisation) and :attr:`metric` (a :class:`~centrum.distances.Metric`:
      a distance for contrastive, triplet and lifted structure, a similarity for N-pair and angular);
    - :meth:`loss_from_negatives` (the loss given the matrix and per-anchor :class:`Negatives`) and
      :meth:`anchor_rows` (which samples act as anchors);
    - :attr:`uses_nearest_negative_only`: True when the loss's value depends on each anchor's single closest
      negative only (batch-hard triplet), so Symm may skip the per-class grouping;
    - :attr:`uses_candidate_inner`: True when the loss reads ``negatives.inner`` (angular);
    - :attr:`official_combinations`, :meth:`official_logits`, :meth:`official_regularizer`: the Symm
      authors' "official" variant (N-pair and angular), empty / not implemented elsewhere.

    :meth:`forward` builds the default negatives (every sample of another class, or what the loss's definition
    prescribes). Each call records ``last_stats``: ``num_negatives``, the (anchor, negative) slots offered.
    """

    official_combinations: tuple[tuple[int, int], ...] = ()
    #: whether :meth:`loss_from_negatives` reads ``negatives.inner`` (the batch's inner products with every
    #: candidate, the angular loss); Symm builds that N x K matrix with gradient only for such a loss
    uses_candidate_inner: bool = False

    def __init__(self, distance: str = "euclidean", normalize: bool = True, similarity: bool = False) -> None:
        super().__init__()
        self.metric = Metric(distance, similarity=similarity)
        self.distance = self.metric.name
        self.normalize = bool(normalize)

    @property
    def uses_similarity(self) -> bool:
        """Whether :meth:`matrix` holds similarities (larger = closer); read from :attr:`metric`."""
        return self.metric.similarity

    @property
    def uses_nearest_negative_only(self) -> bool:
        """Whether the loss depends on each anchor's single closest negative only (default False)."""
        return False

    def prepare(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The embeddings the loss works on: float32, L2-normalised if ``normalize``."""
        return l2_normalize(embeddings) if self.normalize else embeddings.float()

    def matrix(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Distances (or similarities, for similarity-based losses) between the rows of ``x`` and ``y``."""
        return self.metric.pairwise(x, y)

    def default_negatives(self, mat: torch.Tensor, labels: torch.Tensor) -> Negatives:
        """The negatives of the loss's published definition: all samples of other classes."""
        return all_negatives(mat, labels)

    def anchor_rows(self, labels: torch.Tensor) -> torch.Tensor:
        """Boolean N: which samples act as anchors (used by Symm's statistics)."""
        return same_class_mask(labels).any(dim=1)

    def loss_from_negatives(
        self, x: torch.Tensor, mat: torch.Tensor, labels: torch.Tensor, negatives: Negatives
    ) -> torch.Tensor:
        """The loss value given the prepared batch, its matrix and the per-anchor negatives."""
        raise NotImplementedError

    def official_logits(self, products: torch.Tensor) -> torch.Tensor:
        """Logits of the Symm authors' variant: one n x n matrix per entry of :attr:`official_combinations`,
        from ``products`` (4 x 4 x n x n: ``products[s, t, i, j]`` the inner product of row i of set s with
        row j of set t, sets = anchors, positives, anchors reflected about positives, positives reflected
        about anchors)."""
        raise NotImplementedError(f"{type(self).__name__} has no official Symmetrical Synthesis variant")

    def official_regularizer(self, products: torch.Tensor) -> torch.Tensor:
        """The loss's penalty term in the official variant (none by default)."""
        return products.new_zeros(())

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, samples_per_class: int | None = None
    ) -> torch.Tensor:
        """Loss of a batch of N embeddings (N x D) with N integer labels; a scalar tensor.

        ``samples_per_class`` declares the batch to be in class-major blocks (the P x M sampler's order); the
        plain pair losses need no layout (every step is computed in static shapes from the labels) and only
        check it, the same call signature as :class:`~centrum.losses.SymmetricalSynthesis`, which uses it.
        """
        e, lab = check_pair_batch(embeddings, labels, samples_per_class)
        x = self.prepare(e)
        mat = self.matrix(x)
        negatives = self.default_negatives(mat, lab)
        self.record_stats(num_negatives=negatives.mask.sum())
        return self.loss_from_negatives(x, mat, lab, negatives)
