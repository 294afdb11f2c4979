"""Pairwise distances and similarities shared by the losses, the evaluation and the indices.

:class:`Metric` owns everything a measure of closeness needs: preparing embeddings (L2 normalisation for
the cosine), pairwise and row-wise values, values from a Gram matrix (inner products and squared norms,
which :class:`~centrum.losses.SymmetricalSynthesis` uses to score synthetic points it never builds), the
in-place query x gallery product of the evaluation and the indices, and its direction: a distance
(smaller = closer) or a similarity (larger = closer), with mining/sorting helpers that read it, so that no
caller multiplies by a sign. The functions below (:func:`pairwise_distance`, ...) are the distance forms.

Half-precision inputs are computed in float32, because squared-norm expansions lose most of their digits
in float16.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F

MetricName = Literal["euclidean", "squared_euclidean", "cosine", "dot"]
METRICS: tuple[str, ...] = ("euclidean", "squared_euclidean", "cosine", "dot")


def check_metric(metric: str) -> str:
    """Return ``metric`` if it names a known distance, else raise a ``ValueError`` listing them."""
    if metric not in METRICS:
        raise ValueError(f"unknown distance {metric!r}; choose one of {', '.join(METRICS)}")
    return metric


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each row of ``x`` to unit Euclidean norm (rows of zeros stay zero)."""
    return F.normalize(x.float(), p=2.0, dim=-1, eps=eps)


def gram_diagonal(gram: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The squared norms of the rows of ``x``, given its Gram matrix ``gram = x x^T``: read off the diagonal (so
    that ``|x|^2 + |x|^2 - 2 x.x`` is exactly 0 and a point's distance to itself exactly ``sqrt(1e-12)``), or,
    inside ``torch.compile``, summed from ``x``: inductor (torch 2.13) differentiates a distance built from the
    Gram's own diagonal wrongly (``tests/losses/test_compiled.py`` compares compiled and eager gradients)."""
    if torch.compiler.is_compiling():
        return (x * x).sum(-1)
    return gram.diagonal()


def squared_euclidean(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances ``||x_i - y_j||^2`` between the rows of ``x`` and ``y``, clamped at 0.

    Uses the expansion ``|x|^2 + |y|^2 - 2 x.y`` (one matrix product), computed in float32.
    """
    x = x.float()
    y = x if y is None else y.float()
    x_sq = (x * x).sum(dim=1, keepdim=True)
    y_sq = (y * y).sum(dim=1, keepdim=True).T
    d2 = x_sq + y_sq - 2.0 * (x @ y.T)
    return d2.clamp_min(0.0)


def euclidean(x: torch.Tensor, y: torch.Tensor | None = None, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distances ``||x_i - y_j||`` between the rows of ``x`` and ``y``.

    The square root is taken of ``max(d^2, eps)`` so that the gradient stays finite for identical
    points (the distance of a point to itself reads ``sqrt(eps)`` = 1e-6 instead of 0).
    """
    return squared_euclidean(x, y).clamp_min(eps).sqrt()


def cosine_similarity(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine similarities between the rows of ``x`` and ``y``, in [-1, 1]."""
    xn = l2_normalize(x)
    yn = xn if y is None else l2_normalize(y)
    return xn @ yn.T


def pairwise_distance(x: torch.Tensor, y: torch.Tensor | None = None, metric: str = "euclidean") -> torch.Tensor:
    """Dissimilarity matrix (smaller = closer) between the rows of ``x`` (N x D) and ``y`` (M x D).

    ``metric``: ``"euclidean"``, ``"squared_euclidean"``, ``"cosine"`` (1 - cosine similarity) or
    ``"dot"`` (negative inner product). Returns an N x M float32 tensor (:meth:`Metric.pairwise`).
    """
    return Metric(metric).pairwise(x, y)


def pairwise_similarity(x: torch.Tensor, y: torch.Tensor | None = None, metric: str = "dot") -> torch.Tensor:
    """Similarity matrix (larger = closer): the cosine itself for ``"cosine"``, the inner product for
    ``"dot"``, and the negative distance for the Euclidean metrics."""
    check_metric(metric)
    if metric in ("cosine", "dot"):
        return Metric(metric, similarity=True).pairwise(x, y)
    return -pairwise_distance(x, y, metric)


class Metric:
    """A measure of closeness between embeddings, keyed by name, in the spirit of pytorch-metric-learning's
    ``BaseDistance``.

    ``name``: ``"euclidean"`` (``sqrt(max(d^2, 1e-12))``), ``"squared_euclidean"``, ``"cosine"`` or ``"dot"``.
    As a distance (default) cosine is ``1 - cos`` and dot is ``-x.y``; with ``similarity=True`` (cosine and
    dot only) the values are ``cos`` and ``x.y`` and larger means closer (:attr:`smaller_is_closer` False).
    Values are float32, computed with the ``|x|^2 + |y|^2 - 2 x.y`` expansion.
    """

    def __init__(self, name: str = "euclidean", similarity: bool = False) -> None:
        self.name = check_metric(name)
        if similarity and name not in ("cosine", "dot"):
            raise ValueError(f"metric {name!r} is a distance; only 'cosine' and 'dot' can be similarities")
        self.similarity = bool(similarity)

    @property
    def smaller_is_closer(self) -> bool:
        """True for a distance, False for a similarity."""
        return not self.similarity

    @property
    def uses_norms(self) -> bool:
        """Whether :meth:`from_gram` needs the squared norms (every metric but the inner product)."""
        return self.name != "dot"

    def __repr__(self) -> str:
        return f"Metric({self.name!r}, similarity={self.similarity})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Metric) and (self.name, self.similarity) == (other.name, other.similarity)

    def __hash__(self) -> int:
        return hash((self.name, self.similarity))

    # ---- values

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings as the metric compares them: float32, L2-normalised for the cosine."""
        return l2_normalize(x) if self.name == "cosine" else x.float()

    def from_gram(
        self, inner: torch.Tensor, sq_rows: torch.Tensor | None, sq_cols: torch.Tensor | None
    ) -> torch.Tensor:
        """Values from inner products ``inner`` (of un-prepared points) and the squared norms of both sides
        (broadcast against ``inner``: e.g. N x 1 and 1 x K). The cosine divides by the norms, as
        :func:`l2_normalize` does (norms below 1e-12 count as 1e-12); norms ``None`` mean rows already
        prepared (unit rows for the cosine; the inner product needs none)."""
        if self.name in ("euclidean", "squared_euclidean"):
            # written out, not torch.add(..., alpha=-2): inductor (torch 2.13) folds add-with-alpha of a matrix
            # product into a wrong fused product (tests/losses/test_compiled.py)
            d2 = sq_rows + sq_cols - 2.0 * inner
            # max(max(d2, 0), 1e-12) = max(d2, 1e-12), in value and in gradient
            return d2.clamp_min(1e-12).sqrt() if self.name == "euclidean" else d2.clamp_min(0.0)
        if self.name == "cosine":
            cos = inner
            if sq_rows is not None:
                cos = inner / (sq_rows.sqrt().clamp_min(1e-12) * sq_cols.sqrt().clamp_min(1e-12))
            return cos if self.similarity else 1.0 - cos
        return inner if self.similarity else -inner

    def ranking_keys(self, inner: torch.Tensor, sq_cols: torch.Tensor) -> torch.Tensor:
        """Keys that order each row's columns from closest (smallest key) to farthest, whatever the direction,
        from inner products and the columns' squared norms: the values with every term that is constant
        along a row left out (``|y|^2 - 2 x.y`` for the Euclidean metrics, ``-x.y / |y|`` for the cosine,
        ``-x.y`` for the inner product). For mining within a row only; one or two operations."""
        if self.name in ("euclidean", "squared_euclidean"):
            return sq_cols - 2.0 * inner  # not add(..., alpha=-2): see from_gram
        if self.name == "cosine":
            return inner / sq_cols.sqrt().clamp_min(1e-12).neg()
        return inner.neg()

    def pairwise(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """N x M values between the rows of ``x`` (N x D) and ``y`` (M x D, default ``x``)."""
        xp = self.prepare(x)
        yp = xp if y is None else self.prepare(y)
        inner = xp @ yp.T
        if self.name in ("euclidean", "squared_euclidean"):
            if y is None:
                sq = gram_diagonal(inner, xp)
                return self.from_gram(inner, sq.unsqueeze(1), sq.unsqueeze(0))
            return self.from_gram(inner, (xp * xp).sum(1, keepdim=True), (yp * yp).sum(1).unsqueeze(0))
        return self.from_gram(inner, None, None)  # cosine: rows already normalised

    def rowwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Values between matching rows of ``x`` and ``y`` (same shape ... x D); the Euclidean square root
        is taken of ``max(d^2, 1e-12)``, the squared distance from the difference."""
        xp, yp = self.prepare(x), self.prepare(y)
        if self.name in ("euclidean", "squared_euclidean"):
            d2 = ((xp - yp) ** 2).sum(-1)
            return d2.clamp_min(1e-12).sqrt() if self.name == "euclidean" else d2
        return self.from_gram((xp * yp).sum(-1), None, None)  # cosine: rows already normalised

    def product_distances(
        self, queries: torch.Tensor, gallery: torch.Tensor, gallery_sq: torch.Tensor | None = None
    ) -> torch.Tensor:
        """B x G *distances* (smaller = closer, whatever :attr:`similarity`) of prepared ``queries`` to a
        prepared ``gallery``, written in place on the one matrix product (no B x G temporaries): the block
        step of the evaluation and the exact indices. ``gallery_sq``: the gallery's squared norms, if cached.
        The expansion adds ``(|q|^2 + |g|^2)`` first, then ``- 2 q.g``, as the widely copied re-id code."""
        if self.name in ("cosine", "dot"):
            dots = queries @ gallery.T
            # rounding can push cos of unit rows past 1: a point's distance to itself must not print as -0.0000
            return dots.neg_().add_(1.0).clamp_min_(0.0) if self.name == "cosine" else dots.neg_()
        if gallery_sq is None:
            gallery_sq = (gallery * gallery).sum(1)
        d2 = (queries * queries).sum(1, keepdim=True) + gallery_sq[None, :]
        d2.addmm_(queries, gallery.T, alpha=-2.0).clamp_min_(0.0)
        return d2 if self.name == "squared_euclidean" else d2.clamp_min_(1e-12).sqrt_()

    def chunked(self, queries: torch.Tensor, gallery: torch.Tensor, rows: int) -> Iterator[tuple[slice, torch.Tensor]]:
        """``(rows_slice, distances)`` for consecutive blocks of ``rows`` queries (prepared here) against the
        gallery (prepared here once): :meth:`product_distances` a block at a time, bounded memory."""
        if int(rows) < 1:
            raise ValueError(f"rows must be a positive integer, got {rows}")
        g = self.prepare(gallery)
        g_sq = (g * g).sum(1) if self.uses_norms and self.name != "cosine" else None
        for start in range(0, queries.shape[0], int(rows)):
            block = slice(start, min(start + int(rows), queries.shape[0]))
            yield block, self.product_distances(self.prepare(queries[block]), g, g_sq)

    # ---- direction

    def nearest(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per row, the closest allowed entry: ``(value, column, valid)``; 0 and column 0 where none is."""
        fill = float("-inf") if self.similarity else float("inf")
        masked = values.detach().masked_fill(~mask, fill)
        best = masked.argmax(-1, keepdim=True) if self.similarity else masked.argmin(-1, keepdim=True)
        valid = mask.gather(-1, best)
        chosen = values.gather(-1, best).masked_fill(~valid, 0.0)
        return chosen.squeeze(-1), best.squeeze(-1).masked_fill(~valid.squeeze(-1), 0), valid.squeeze(-1)

    def farthest(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row, the farthest allowed value and whether the row has one (0 where not)."""
        fill = float("inf") if self.similarity else float("-inf")
        masked = values.masked_fill(~mask, fill)
        best = masked.min(-1).values if self.similarity else masked.max(-1).values
        valid = mask.any(-1)
        return best.masked_fill(~valid, 0.0), valid

    def argsort(self, values: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Indices that order ``values`` from closest to farthest (stable: ties keep their order)."""
        return torch.argsort(values, dim=dim, descending=self.similarity, stable=True)


def rowwise_distance(x: torch.Tensor, y: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """Distance between matching rows of ``x`` and ``y`` (same shape, ... x D), in the metrics of
    :func:`pairwise_distance` (Euclidean square root taken of ``max(d^2, 1e-12)``)."""
    return Metric(metric).rowwise(x, y)
