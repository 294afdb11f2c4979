"""Centroid Triplet Loss (Wieczorek et al. 2021): the paper's and the authors' official variants."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from centrum.distances import check_metric, l2_normalize, pairwise_distance, rowwise_distance
from centrum.losses._masks import _masked_mean, class_index, dense_class_ids
from centrum.losses.base import ReportsStats
from centrum.losses.mining import hardest_negative
from centrum.validation import check_class_blocks, check_embeddings_labels, check_labels, value_checks_enabled

__all__ = ["CentroidTripletLoss", "centroid_triplet_loss", "check_centroid_batch"]


def _checked_batch(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~centrum.validation.check_embeddings_labels` with its NaN/inf scan cut to one reduction.

    A NaN or inf anywhere makes the sum non-finite, so a finite sum proves every entry finite. Anything else
    (a non-finite sum, from a bad entry or from finite values overflowing; a non-tensor; a bad shape or
    dtype) goes through the full check, which raises with the offending rows or passes.
    """
    e = embeddings
    if (
        isinstance(e, torch.Tensor)
        and e.ndim == 2
        and e.numel() > 0
        and e.is_floating_point()
        and (not value_checks_enabled() or bool(torch.isfinite(e.detach().sum())))
    ):
        return e, check_labels(labels, e.shape[0]).to(e.device)
    return check_embeddings_labels(embeddings, labels)


def check_centroid_batch(labels: torch.Tensor, counts: torch.Tensor, name: str = "labels") -> None:
    """Raise a ``ValueError`` unless the batch has two classes and one class with two samples."""
    if counts.numel() < 2:
        raise ValueError(
            f"{name} holds a single class ({int(labels[0])}); the loss needs negatives from at least two classes"
        )
    if int(counts.max()) < 2:
        raise ValueError(
            f"no class in {name} has two samples (all {labels.shape[0]} labels are distinct); the loss needs at "
            "least one class with >= 2 samples for a positive: sample batches as P classes x M >= 2 samples"
        )


def _batched_distance(u: torch.Tensor, metric: str) -> torch.Tensor:
    """B x n x n distances between the rows of each of the B matrices in ``u`` (B x n x D)."""
    if metric in ("euclidean", "squared_euclidean"):
        sq = (u * u).sum(-1)
        d2 = torch.baddbmm(sq.unsqueeze(2) + sq.unsqueeze(1), u, u.transpose(1, 2), alpha=-2.0)
        return d2.clamp_min(1e-12).sqrt() if metric == "euclidean" else d2.clamp_min(0.0)
    if metric == "cosine":
        un = l2_normalize(u)
        return 1.0 - un @ un.transpose(1, 2)
    return -(u @ u.transpose(1, 2))


class _EuclideanRows(torch.autograd.Function):
    """``max(||x - y||, 1e-6)`` along the last dimension, with a one-pass backward.

    Equals :func:`rowwise_distance`'s Euclidean ``sqrt(max(d^2, 1e-12))`` in value, and in gradient:
    ``(x - y) / d`` where ``d >= 1e-6``, zero below. Autograd's own norm backward takes several passes over
    the D-wide data, which dominates a loss whose other work is a few small matrices. First order only.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        diff = x - y
        norm = torch.linalg.vector_norm(diff, dim=-1)
        ctx.save_for_backward(diff, norm)
        return norm.clamp_min(1e-6)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        diff, norm = ctx.saved_tensors
        coef = torch.where(norm >= 1e-6, grad / norm.clamp_min(1e-6), 0.0)
        grad_x = diff * coef.unsqueeze(-1)
        return grad_x, -grad_x if ctx.needs_input_grad[1] else None


def _rowwise(x: torch.Tensor, y: torch.Tensor, metric: str) -> torch.Tensor:
    """:func:`rowwise_distance` for ``x`` and ``y`` of the same shape; Euclidean through
    :class:`_EuclideanRows`."""
    if metric == "euclidean":
        return _EuclideanRows.apply(x, y)
    return rowwise_distance(x, y, metric)


def _union_points(grouped: torch.Tensor) -> torch.Tensor:
    """The union of every rotation of the official CTL for a P x M x D batch of equal-size classes:
    M x 2P x D, ``[r, k]`` the query of class k in rotation r (its r-th sample), ``[r, P + k]`` its
    leave-one-out centroid ``(sum_k - query) / (M - 1)``."""
    M = grouped.shape[1]
    queries = grouped.transpose(0, 1)
    centroids = torch.add(grouped.sum(1) / (M - 1), queries, alpha=-1.0 / (M - 1))
    return torch.cat([queries, centroids], dim=1)


def _negative_rows(points: torch.Tensor, metric: str) -> torch.Tensor:
    """For each point of ``points`` (M x 2P x D from :func:`_union_points`), the row in
    ``points.view(-1, D)`` of the nearest point of another class in the same rotation, in ``metric``.

    Mining only: no gradient, so the M x 2P x 2P matrix never enters the backward pass; terms constant
    along a row (the anchor's own norm) are left out, as they do not change the ranking.
    """
    M, n, _ = points.shape
    P = n // 2
    with torch.no_grad():
        u = points.detach()
        if metric in ("euclidean", "squared_euclidean"):  # ||b||^2 - 2 a.b, the Gram's diagonal giving ||b||^2
            score = torch.bmm(u, u.transpose(1, 2))
            sq = score.diagonal(dim1=1, dim2=2).clone()
            score.mul_(-2.0).add_(sq.unsqueeze(1))
        else:
            u = l2_normalize(u) if metric == "cosine" else u
            score = torch.bmm(u, u.transpose(1, 2)).neg_()
        score.view(M, 2, P, 2, P).diagonal(dim1=2, dim2=4).fill_(float("inf"))  # same class: never a negative
        nearest = score.min(-1).indices
        return nearest.add_(torch.arange(0, M * n, n, device=points.device).unsqueeze(1)).view(-1)


class _OfficialBalancedDiff(torch.autograd.Function):
    """The official CTL of :func:`_ctl_official_balanced` for the Euclidean and squared Euclidean
    distances, with a hand-written backward.

    Forward: all rotations' points, the hardest negatives mined without gradient, then ``d_ap`` and ``d_an``
    from the differences ``anchor - other`` (Euclidean ``max(||.||, 1e-6)``, i.e. ``sqrt(max(d^2,
    1e-12))``; squared ``||.||^2``). Backward: the gradient of each distance is its difference times
    ``1 / d`` (zero where ``d < 1e-6``) or times 2, scattered to both ends and mapped from centroids back
    to their samples, in a handful of passes over the batch instead of autograd's chain of small nodes.
    First order only.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, num_classes: int, margin: float, squared: bool) -> torch.Tensor:
        N, D = x.shape
        P, M = num_classes, N // num_classes
        grouped = x.view(P, M, D)
        # M x 2P x D as _union_points, written in place. With classes of two, both rotations' unions are the
        # batch itself with the same anchors and distances: rotation 0 alone (centroid of x[k, 0]: x[k, 1]).
        R = 1 if M == 2 else M  # rotations computed
        points = x.new_empty(R, 2 * P, D)
        points[:, :P] = grouped[:, :R].transpose(0, 1)
        if M == 2:
            points[0, P:] = grouped[:, 1]
        else:
            # (sum - query) / (M - 1), copied in (an out= view that is not contiguous does not compile)
            points[:, P:] = (grouped.sum(1).unsqueeze(0) - points[:, :P]) / (M - 1)
        M = R
        rows = _negative_rows(points, "squared_euclidean")
        flat = points.view(-1, D)
        diff_an = flat.index_select(0, rows)
        diff_an = torch.sub(flat, diff_an, out=diff_an)  # 2PM x D, anchor - its hardest negative
        diff_ap = points[:, :P] - points[:, P:]  # M x P x D, query - its centroid
        n_an = torch.linalg.vector_norm(diff_an, dim=-1).view(M, 2, P)
        n_ap = torch.linalg.vector_norm(diff_ap, dim=-1).unsqueeze(1)  # M x 1 x P: both anchors' d_ap
        if squared:
            hinge = n_ap * n_ap - n_an * n_an + margin
        else:
            hinge = n_ap.clamp_min(1e-6) - n_an.clamp_min(1e-6) + margin
        ctx.save_for_backward(diff_an, diff_ap, n_an, n_ap, rows, hinge > 0)
        ctx.squared = squared
        return hinge.clamp_min(0.0).mean()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        diff_an, diff_ap, n_an, n_ap, rows, active = ctx.saved_tensors
        M, _, P = n_an.shape
        weight = active * (grad / active.numel())  # d loss / d hinge, M x 2 x P
        if ctx.squared:
            s_an, s_ap = weight * -2.0, weight.sum(1) * 2.0
        else:
            s_an = -torch.where(n_an >= 1e-6, weight / n_an.clamp_min(1e-6), 0.0)
            s_ap = torch.where(n_ap >= 1e-6, weight / n_ap.clamp_min(1e-6), 0.0).sum(1)
        step = diff_an * s_an.view(-1, 1)  # into each anchor; minus it into its negative
        g_points = torch.index_add(step, 0, rows, step, alpha=-1.0).view(M, 2 * P, -1)
        step_ap = diff_ap * s_ap.unsqueeze(-1)
        g_queries, g_centroids = g_points[:, :P].add_(step_ap), g_points[:, P:].sub_(step_ap)
        if M == 1:  # classes of two samples, rotation 0 only: its points are the samples x[k, 0], x[k, 1]
            return g_points.view(2, P, -1).transpose(0, 1).reshape(2 * P, -1), None, None, None
        # a centroid is (sum - query) / (M - 1): each of its class's other samples gets 1 / (M - 1) of it
        g = g_points.new_empty(P, M, g_points.shape[2])  # written rotation-major, returned in batch order
        g.transpose(0, 1).copy_(g_queries - g_centroids / (M - 1))
        g.add_(g_centroids.sum(0).unsqueeze(1), alpha=1.0 / (M - 1))
        return g.view(P * M, -1), None, None, None


def _ctl_paper(
    x: torch.Tensor, inverse: torch.Tensor, counts: torch.Tensor, margin: float, distance: str
) -> torch.Tensor:
    """The paper's CTL (see :func:`centroid_triplet_loss`): the nearest negative centroid is mined without
    gradient and its distance recomputed row by row, so the gradient is that of the mined triplets. ``counts``
    may hold empty class slots (zeros, :func:`~centrum.losses._masks.dense_class_ids`): they are never chosen."""
    C = counts.shape[0]
    sums = x.new_zeros(C, x.shape[1]).index_add_(0, inverse, x)
    means = sums / counts.clamp_min(1).unsqueeze(1)
    own = counts.index_select(0, inverse)
    loo = (sums.index_select(0, inverse) - x) / (own - 1).clamp_min(1).unsqueeze(1)
    d_pos = _rowwise(x, loo, distance)
    with torch.no_grad():
        score = pairwise_distance(x.detach(), means.detach(), distance)
        own_class = inverse.unsqueeze(1) == torch.arange(C, device=x.device).unsqueeze(0)
        nearest = score.masked_fill_(own_class | (counts == 0).unsqueeze(0), float("inf")).argmin(1)
    d_neg = _rowwise(x, means.index_select(0, nearest), distance)
    return _masked_mean(F.relu(d_pos - d_neg + margin), own >= 2)


def _ctl_official_balanced(
    x: torch.Tensor, inverse: torch.Tensor | None, num_classes: int, margin: float, distance: str
) -> torch.Tensor:
    """The official CTL for a batch of ``num_classes`` classes with the same number M >= 2 of samples each
    (any label order), all M rotations at once.

    In rotation r the union holds, per class k, the query ``q = x[k, r]`` and its leave-one-out centroid
    ``c``; ``c`` is the only other point of class k, so both anchors share ``d_ap = d(q, c)``, and ``d_an``
    is the distance to the nearest other-class point of the union, mined without gradient and recomputed
    for the chosen pair only. Every rotation has the same 2P anchors, so the mean over anchors then
    rotations is the plain mean. ``inverse=None``: the batch is already in class-major blocks.
    """
    N, D = x.shape
    P, M = num_classes, N // num_classes
    # group by class; stable keeps each class's batch order
    if inverse is not None and not bool((inverse[1:] >= inverse[:-1]).all()):
        x = x.index_select(0, torch.argsort(inverse, stable=True))
    if distance in ("euclidean", "squared_euclidean"):
        return _OfficialBalancedDiff.apply(x.contiguous(), P, margin, distance == "squared_euclidean")
    points = _union_points(x.reshape(P, M, D))  # x.reshape(P, M, D)[k, r]: the query of class k in rotation r
    negatives = points.view(-1, D).index_select(0, _negative_rows(points, distance)).view(M, 2 * P, D)
    d_an = rowwise_distance(points, negatives, distance).view(M, 2, P)  # query and centroid anchors
    d_ap = rowwise_distance(points[:, :P], points[:, P:], distance).unsqueeze(1)
    return F.relu(d_ap - d_an + margin).mean()


def _ctl_official_general(
    x: torch.Tensor, inverse: torch.Tensor, counts: torch.Tensor, margin: float, distance: str
) -> torch.Tensor:
    """The official CTL for any class sizes (see :func:`centroid_triplet_loss`), vectorised over rotations
    and classes: rotation-major R x C grids of queries and centroids, with presence masks."""
    C = counts.shape[0]
    sums = x.new_zeros(C, x.shape[1]).index_add_(0, inverse, x)
    # rank of each sample inside its class, in batch order
    order = torch.argsort(inverse, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(inverse)
    rank[order] = torch.arange(x.shape[0], device=x.device) - starts[inverse[order]]
    R = int(counts.max())
    queries = x.new_zeros(R, C, x.shape[1])
    queries[rank, inverse] = x
    has_query = torch.zeros(R, C, dtype=torch.bool, device=x.device)
    has_query[rank, inverse] = True
    denom = (counts.unsqueeze(0) - has_query.long()).clamp_min(1).unsqueeze(2)
    centroids = (sums.unsqueeze(0) - queries) / denom  # leave-one-out where queried, full mean otherwise
    has_centroid = ~has_query | (counts >= 2).unsqueeze(0)
    points = torch.cat([queries, centroids], dim=1)  # R x 2C x D
    present = torch.cat([has_query, has_centroid], dim=1)
    point_class = torch.arange(C, device=x.device).repeat(2)
    dist = _batched_distance(points, distance)
    partner = torch.cat([torch.arange(C, 2 * C), torch.arange(C)]).to(x.device)
    d_pos = dist.gather(2, partner.view(1, -1, 1).expand(R, -1, 1)).squeeze(2)
    is_anchor = present & present[:, partner]
    neg_mask = (point_class.unsqueeze(0) != point_class.unsqueeze(1)).unsqueeze(0) & present.unsqueeze(1)
    d_neg, has_neg = hardest_negative(dist, neg_mask)
    valid = is_anchor & has_neg
    per_point = F.relu(d_pos - d_neg + margin) * valid
    per_rotation = per_point.sum(1) / valid.sum(1).clamp_min(1)
    used = valid.any(1)
    return per_rotation[used].mean()


def centroid_triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.5,
    variant: str = "paper",
    distance: str = "euclidean",
    normalize: bool = False,
    samples_per_class: int | None = None,
) -> torch.Tensor:
    """Centroid Triplet Loss (Wieczorek et al. 2021), ``variant="paper"`` or ``"official"``.

    ``"paper"``: for each sample ``q`` of a class with >= 2 samples, ``max(0, d(q, c_P) - min_N d(q, c_N) +
    margin)`` with ``c_P`` the mean of the other samples of its class (leave-one-out) and ``c_N`` the full
    means of the other classes; averaged over those samples.

    ``"official"`` (the authors' training code): for each rotation ``r = 0 .. max class size - 1`` the r-th
    sample (batch order) of every class is a query and its class gets the leave-one-out centroid without
    it; batch-hard triplet mining (hardest positive, hardest negative) runs over the union of queries and
    centroids, every point with a partner being an anchor; averaged over anchors, then over rotations. A
    class with no r-th sample contributes its full mean as a negative only (the authors' code assumes
    equal class sizes). Vectorised over rotations and classes; batches whose classes all have the same
    size (the P x M sampler's, in any label order) take a shorter path that mines the hardest negatives
    without gradient and recomputes only the chosen distances.

    Both variants mine without gradient and differentiate the chosen distances only (the same gradient as
    differentiating through the mining). With the Euclidean distances that gradient comes from a
    hand-written backward, which is first order only: a double backward raises.

    ``samples_per_class=M`` declares the batch to be in class-major blocks of M >= 2 (the P x M sampler's
    order). The paper's variant needs no declaration (its class slots are computed in static shapes); the
    official one then takes the balanced path without reading the labels. Either way nothing waits on the
    device and ``torch.compile`` traces the loss whole.

    Raises ``ValueError`` for bad input, a single class, or no class with two samples (value checks: see
    :func:`~centrum.validation.value_checks_enabled`).
    """
    x, labels = _checked_batch(embeddings, labels)
    check_metric(distance)
    if variant not in ("paper", "official"):
        raise ValueError(f"unknown variant {variant!r}; choose 'paper' or 'official'")
    if samples_per_class is not None:
        if samples_per_class < 2:
            raise ValueError(f"samples_per_class must be >= 2 for a centroid and a query, got {samples_per_class}")
        check_class_blocks(labels, samples_per_class)
    x = l2_normalize(x) if normalize else x.float()
    if value_checks_enabled():
        check_centroid_batch(labels, class_index(labels)[2])
    if variant == "paper":
        return _ctl_paper(x, *dense_class_ids(labels), margin, distance)
    if samples_per_class is not None:
        return _ctl_official_balanced(x, None, x.shape[0] // samples_per_class, margin, distance)
    _, inverse, counts = class_index(labels)
    P = counts.shape[0]
    if bool((counts == x.shape[0] // P).all()):
        return _ctl_official_balanced(x, inverse, P, margin, distance)
    return _ctl_official_general(x, inverse, counts, margin, distance)


class CentroidTripletLoss(ReportsStats, nn.Module):
    """Centroid Triplet Loss (Wieczorek et al. 2021): a triplet loss between each sample and class centroids.

    ``variant="paper"`` (default): positive = leave-one-out centroid of the sample's class, negative = the
    nearest full centroid of another class, averaged over samples of classes with >= 2 samples.
    ``variant="official"``: the authors' code, batch-hard mining over queries and leave-one-out centroids,
    one rotation per sample position (see :func:`centrum.losses.functional.centroid_triplet_loss`).
    Defaults: margin 0.5, plain Euclidean distance on un-normalised features, as in the authors' code.
    """

    def __init__(
        self, margin: float = 0.5, variant: str = "paper", distance: str = "euclidean", normalize: bool = False
    ) -> None:
        super().__init__()
        if variant not in ("paper", "official"):
            raise ValueError(f"unknown variant {variant!r}; choose 'paper' or 'official'")
        self.margin, self.variant = float(margin), variant
        self.distance, self.normalize = check_metric(distance), bool(normalize)

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, samples_per_class: int | None = None
    ) -> torch.Tensor:
        """Loss of a batch of N embeddings (N x D) with N integer labels; a scalar tensor (``samples_per_class``:
        see :func:`centroid_triplet_loss`)."""
        return centroid_triplet_loss(
            embeddings, labels, self.margin, self.variant, self.distance, self.normalize, samples_per_class
        )
