"""The functional layer of :mod:`centrum.losses`: pure tensor functions behind every loss module.

Conventions shared by the pair-based kernels (``*_from_negatives``):

- ``x`` is the prepared N x D float32 batch (already L2-normalised where the loss asks for it);
- ``mat`` is the N x N anchor-vs-batch matrix in the loss's own measure: a distance (smaller = closer)
  for contrastive, triplet and lifted structure, a similarity (larger = closer) for N-pair and angular;
- ``negatives`` (:class:`Negatives`) lists, per anchor row, the negative values the loss may use, with a
  mask and the index of each negative in a candidate ``bank``. Without Symmetrical Synthesis the bank is
  the batch itself; :class:`~centrum.losses.SymmetricalSynthesis` swaps in originals + synthetic points and
  keeps only the hardest per negative class. That is the single seam through which Symm plugs into every
  pair-based loss.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from centrum.distances import check_metric, l2_normalize, pairwise_distance
from centrum.losses.mining import hardest_negative, hardest_positive, semihard_negative
from centrum.validation import check_embeddings_labels, check_labels

__all__ = [
    "Negatives",
    "all_negatives",
    "angular_from_negatives",
    "center_loss",
    "centroid_triplet_loss",
    "contrastive_from_negatives",
    "first_pairs",
    "label_smoothed_cross_entropy",
    "lifted_structure_from_negatives",
    "npair_from_negatives",
    "ordered_positive_pairs",
    "rowwise_distance",
    "symmetric_reflection",
    "synthesize_pairs",
    "triplet_from_negatives",
]


class Negatives(NamedTuple):
    """Per-anchor negatives fed to a pair-based loss.

    ``values`` (N x S): anchor-to-negative distance or similarity, in the loss's measure; ``mask`` (N x S):
    which slots hold a negative; ``index`` (N x S): position of each negative in ``bank`` (K x D), the
    points the negatives were drawn from (needed by the angular loss, whose negative term uses the point
    itself); ``is_synthetic`` (N x S, optional): whether the chosen negative is a synthetic point.
    """

    values: torch.Tensor
    mask: torch.Tensor
    index: torch.Tensor
    bank: torch.Tensor
    is_synthetic: torch.Tensor | None = None


# --------------------------------------------------------------------------------------------------
# small shared pieces


def _zero_loss(x: torch.Tensor) -> torch.Tensor:
    """A zero that stays connected to the graph, so ``backward()`` works on batches with nothing to learn."""
    return x.sum() * 0.0


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    count = mask.sum()
    return (values * mask).sum() / count.clamp_min(1)


def _log1p_sum_exp(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``log(1 + sum_j exp(z_j))`` over the masked entries of the last dimension, stable and NaN-free."""
    z = z.masked_fill(~mask, float("-inf"))
    zero = z.new_zeros((*z.shape[:-1], 1))
    return torch.logsumexp(torch.cat([zero, z], dim=-1), dim=-1)


def same_class_mask(labels: torch.Tensor) -> torch.Tensor:
    """N x N boolean: ``labels[i] == labels[j]`` and ``i != j`` (the ordered positive pairs)."""
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    return same & ~torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)


def ordered_positive_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(i, j)`` of every ordered pair of distinct samples with the same label."""
    i, j = same_class_mask(labels).nonzero(as_tuple=True)
    return i, j


def first_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One (anchor, positive) pair per class with at least two samples: its first and second sample in
    batch order (Sohn's N pairs; the pair pytorch-metric-learning's ``NPairsLoss`` picks too)."""
    n = labels.shape[0]
    _, inverse = torch.unique(labels, return_inverse=True)
    order = torch.argsort(inverse, stable=True)
    sorted_cls = inverse[order]
    is_first = torch.ones(n, dtype=torch.bool, device=labels.device)
    is_first[1:] = sorted_cls[1:] != sorted_cls[:-1]
    has_second = torch.zeros(n, dtype=torch.bool, device=labels.device)
    has_second[:-1] = is_first[:-1] & (sorted_cls[1:] == sorted_cls[:-1])
    first = has_second.nonzero(as_tuple=True)[0]
    return order[first], order[first + 1]


def all_negatives(mat: torch.Tensor, labels: torch.Tensor, columns: torch.Tensor | None = None) -> Negatives:
    """The negatives of a loss without Symm: every batch sample of another class (or only ``columns``)."""
    bank_labels = labels if columns is None else labels[columns]
    values = mat if columns is None else mat[:, columns]
    mask = labels.unsqueeze(1) != bank_labels.unsqueeze(0)
    index = torch.arange(values.shape[1], device=mat.device) if columns is None else columns
    return Negatives(values, mask, index.unsqueeze(0).expand_as(values), torch.empty(0))


def rowwise_distance(x: torch.Tensor, y: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """Distance between matching rows of ``x`` and ``y`` (same shape, ... x D), in the metrics of
    :func:`centrum.distances.pairwise_distance` (Euclidean square root taken of ``max(d^2, 1e-12)``)."""
    check_metric(metric)
    x, y = x.float(), y.float()
    if metric in ("euclidean", "squared_euclidean"):
        d2 = ((x - y) ** 2).sum(-1)
        return d2.clamp_min(1e-12).sqrt() if metric == "euclidean" else d2
    if metric == "cosine":
        return 1.0 - (l2_normalize(x) * l2_normalize(y)).sum(-1)
    return -(x * y).sum(-1)


# --------------------------------------------------------------------------------------------------
# Symmetrical Synthesis


def symmetric_reflection(x: torch.Tensor, axis: torch.Tensor, alpha: float = 2.0, beta: float = 1.0) -> torch.Tensor:
    """Symmetrical Synthesis of ``x`` about the line through the origin along ``axis`` (Gu & Ko 2020).

    ``x' = beta * (x + alpha * (r - x))`` with ``r = (x . u) u`` the projection of ``x`` on
    ``u = axis / ||axis||``. ``alpha = 2, beta = 1`` is the reflection ``2 (x . u) u - x``: it preserves the
    norm of ``x``, its distance to ``axis`` and its cosine to ``axis``. Rows of ``x`` and ``axis`` are
    paired (same shape ... x D); computed in float32.
    """
    if x.shape != axis.shape:
        raise ValueError(f"x has shape {tuple(x.shape)} but axis has shape {tuple(axis.shape)}; they must match")
    x = x.float()
    u = l2_normalize(axis)
    r = (x * u).sum(-1, keepdim=True) * u
    return beta * (x + alpha * (r - x))


def synthesize_pairs(
    x: torch.Tensor, labels: torch.Tensor, alpha: float = 2.0, beta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic points of a batch: for every ordered pair ``(k, l)`` of distinct same-class samples,
    ``x_k`` reflected about ``x_l``. Returns ``(points, source, axis)`` with the indices ``k`` and ``l``."""
    source, axis = ordered_positive_pairs(labels)
    return symmetric_reflection(x[source], x[axis], alpha, beta), source, axis


# --------------------------------------------------------------------------------------------------
# pair-based kernels


def contrastive_from_negatives(
    mat: torch.Tensor,
    labels: torch.Tensor,
    negatives: Negatives,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    average: str = "all",
) -> torch.Tensor:
    """Contrastive loss: ``relu(d_ap - pos_margin)`` over ordered positive pairs plus ``relu(neg_margin - d_an)``
    over the negatives, each term averaged separately (``average="all"``: over all its pairs;
    ``"nonzero"``: over its pairs with non-zero loss, pytorch-metric-learning's default) and summed."""
    pos_mask = same_class_mask(labels)
    pos_terms = F.relu(mat - pos_margin)
    neg_terms = F.relu(neg_margin - negatives.values)
    if average == "nonzero":
        pos_mask = pos_mask & (pos_terms > 0)
        neg_mask = negatives.mask & (neg_terms > 0)
    else:
        neg_mask = negatives.mask
    return _masked_mean(pos_terms, pos_mask) + _masked_mean(neg_terms, neg_mask)


def triplet_from_negatives(
    mat: torch.Tensor,
    labels: torch.Tensor,
    negatives: Negatives,
    margin: float = 0.2,
    mining: str = "hard",
    soft_margin: bool = False,
) -> torch.Tensor:
    """Triplet margin loss ``f(d_ap - d_an)`` with ``f = relu(. + margin)`` or, with ``soft_margin``,
    ``softplus(.)`` (Hermans et al. 2017).

    ``mining="hard"``: per anchor the hardest positive and hardest negative (batch-hard), averaged over
    anchors that have both. ``"semihard"``: per anchor-positive pair the semi-hard negative of
    :func:`~centrum.losses.mining.semihard_negative`, averaged over pairs. ``"all"``: every valid triplet,
    averaged over the triplets with non-zero loss.
    """

    def f(z: torch.Tensor) -> torch.Tensor:
        return F.softplus(z) if soft_margin else F.relu(z + margin)

    pos_mask = same_class_mask(labels)
    if mining == "hard":
        d_ap, has_pos = hardest_positive(mat, pos_mask)
        d_an, has_neg = hardest_negative(negatives.values, negatives.mask)
        valid = has_pos & has_neg
        if not bool(valid.any()):
            return _zero_loss(mat)
        return f(d_ap - d_an)[valid].mean()
    if mining == "semihard":
        d_an, has_neg = semihard_negative(mat, negatives.values, negatives.mask)
        valid = pos_mask & has_neg
        if not bool(valid.any()):
            return _zero_loss(mat)
        return f(mat - d_an)[valid].mean()
    if mining == "all":
        losses = f(mat.unsqueeze(2) - negatives.values.unsqueeze(1))  # anchor x positive x negative
        valid = pos_mask.unsqueeze(2) & negatives.mask.unsqueeze(1)
        counted = valid & (losses > 0)
        if not bool(counted.any()):
            return _zero_loss(mat)
        return losses[counted].mean()
    raise ValueError(f"unknown mining {mining!r}; choose 'hard', 'semihard' or 'all'")


def lifted_structure_from_negatives(
    mat: torch.Tensor, labels: torch.Tensor, negatives: Negatives, neg_margin: float = 1.0, pos_margin: float = 0.0
) -> torch.Tensor:
    """Lifted structured loss, smooth form (Song et al. 2016, eq. 4).

    For each positive pair ``(i, j)``: ``J_ij = log(sum_{k in N(i)} exp(neg_margin - D_ik) +
    sum_{l in N(j)} exp(neg_margin - D_jl)) + D_ij - pos_margin`` and ``L = 1/(2|P|) sum relu(J_ij)^2`` over
    the unordered positive pairs, computed as the mean of ``relu(J)^2 / 2`` over ordered pairs.
    """
    pos_mask = same_class_mask(labels)
    if not bool(pos_mask.any()):
        return _zero_loss(mat)
    neg_terms = (neg_margin - negatives.values).masked_fill(~negatives.mask, float("-inf"))
    per_anchor = torch.logsumexp(neg_terms, dim=1)  # -inf for an anchor without negatives
    i, j = pos_mask.nonzero(as_tuple=True)
    J = torch.logaddexp(per_anchor[i], per_anchor[j]) + mat[i, j] - pos_margin
    return (F.relu(J) ** 2).mean() / 2.0


def npair_from_negatives(
    x: torch.Tensor,
    mat: torch.Tensor,
    labels: torch.Tensor,
    negatives: Negatives,
    l2_reg: float = 0.002,
    pairs: str = "first",
) -> torch.Tensor:
    """Multi-class N-pair loss (Sohn 2016) on similarities ``mat``, plus its L2 penalty on embeddings.

    ``pairs="first"``: one (anchor, positive) pair per class (:func:`first_pairs`),
    ``L = mean_i log(1 + sum_n exp(s_in - s_ip)) + l2_reg/4 * (mean ||a||^2 + mean ||p||^2)`` (the
    regulariser as in TensorFlow's ``npairs_loss``); without Symm the negatives of anchor ``i`` are the
    positives of the other classes' pairs. ``pairs="all"``: every ordered positive pair, every other-class
    sample a negative, penalty ``l2_reg/2 * mean ||x||^2`` over the samples in a pair.
    """
    if pairs == "first":
        a, p = first_pairs(labels)
        if a.numel() == 0:
            return _zero_loss(mat)
        z = negatives.values[a] - mat[a, p].unsqueeze(1)
        ce = _log1p_sum_exp(z, negatives.mask[a]).mean()
        reg = 0.25 * l2_reg * ((x[a] ** 2).sum(1).mean() + (x[p] ** 2).sum(1).mean())
        return ce + reg
    if pairs == "all":
        pos_mask = same_class_mask(labels)
        if not bool(pos_mask.any()):
            return _zero_loss(mat)
        z = negatives.values.unsqueeze(1) - mat.unsqueeze(2)  # anchor x positive x negative
        per_pair = _log1p_sum_exp(z, negatives.mask.unsqueeze(1).expand_as(z))
        in_pair = pos_mask.any(dim=1)
        reg = 0.5 * l2_reg * (x[in_pair] ** 2).sum(1).mean()
        return per_pair[pos_mask].mean() + reg
    raise ValueError(f"unknown pairs {pairs!r}; choose 'first' or 'all'")


def angular_from_negatives(
    x: torch.Tensor,
    mat: torch.Tensor,
    labels: torch.Tensor,
    negatives: Negatives,
    alpha: float = 45.0,
    pairs: str = "first",
) -> torch.Tensor:
    """Angular loss, N-pair form (Wang et al. 2017, eq. 8), on inner products.

    ``f_apn = 4 tan^2(alpha) (x_a + x_p) . x_n - 2 (1 + tan^2(alpha)) x_a . x_p`` and
    ``L = mean_(a,p) log(1 + sum_n exp(f_apn))`` over the (anchor, positive) pairs of ``pairs`` (as in
    :func:`npair_from_negatives`). ``alpha`` is in degrees. The negative points are
    ``negatives.bank[negatives.index]`` (the batch itself when ``negatives.bank`` is empty).
    """
    t2 = math.tan(math.radians(alpha)) ** 2
    bank = x if negatives.bank.numel() == 0 else negatives.bank
    G = x @ bank.T  # sample x bank inner products
    if pairs == "first":
        a, p = first_pairs(labels)
        if a.numel() == 0:
            return _zero_loss(mat)
        idx = negatives.index[a]
        f = 4 * t2 * (G[a].gather(1, idx) + G[p].gather(1, idx)) - 2 * (1 + t2) * mat[a, p].unsqueeze(1)
        return _log1p_sum_exp(f, negatives.mask[a]).mean()
    if pairs == "all":
        pos_mask = same_class_mask(labels)
        if not bool(pos_mask.any()):
            return _zero_loss(mat)
        a, p = pos_mask.nonzero(as_tuple=True)
        idx = negatives.index[a]
        f = 4 * t2 * (G[a].gather(1, idx) + G[p].gather(1, idx)) - 2 * (1 + t2) * mat[a, p].unsqueeze(1)
        return _log1p_sum_exp(f, negatives.mask[a]).mean()
    raise ValueError(f"unknown pairs {pairs!r}; choose 'first' or 'all'")


# --------------------------------------------------------------------------------------------------
# Centroid Triplet Loss


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
        and bool(torch.isfinite(e.detach().sum()))
    ):
        return e, check_labels(labels, e.shape[0]).to(e.device)
    return check_embeddings_labels(embeddings, labels)


def _class_index(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(classes, inverse, counts)``: sorted distinct labels, each sample's class position, class sizes."""
    return torch.unique(labels, return_inverse=True, return_counts=True)


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
            torch.add(grouped.sum(1) / (M - 1), points[:, :P], alpha=-1.0 / (M - 1), out=points[:, P:])
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
        torch.add(g_queries, g_centroids, alpha=-1.0 / (M - 1), out=g.transpose(0, 1))
        g.add_(g_centroids.sum(0).unsqueeze(1), alpha=1.0 / (M - 1))
        return g.view(P * M, -1), None, None, None


def _ctl_paper(
    x: torch.Tensor, inverse: torch.Tensor, counts: torch.Tensor, margin: float, distance: str
) -> torch.Tensor:
    """The paper's CTL (see :func:`centroid_triplet_loss`): the nearest negative centroid is mined without
    gradient and its distance recomputed row by row, so the gradient is that of the mined triplets."""
    C = counts.shape[0]
    sums = x.new_zeros(C, x.shape[1]).index_add_(0, inverse, x)
    means = sums / counts.unsqueeze(1)
    own = counts.index_select(0, inverse)
    loo = (sums.index_select(0, inverse) - x) / (own - 1).clamp_min(1).unsqueeze(1)
    d_pos = _rowwise(x, loo, distance)
    with torch.no_grad():
        score = pairwise_distance(x.detach(), means.detach(), distance)
        own_class = inverse.unsqueeze(1) == torch.arange(C, device=x.device).unsqueeze(0)
        nearest = score.masked_fill_(own_class, float("inf")).argmin(1)
    d_neg = _rowwise(x, means.index_select(0, nearest), distance)
    return _masked_mean(F.relu(d_pos - d_neg + margin), own >= 2)


def _ctl_official_balanced(
    x: torch.Tensor, inverse: torch.Tensor, num_classes: int, margin: float, distance: str
) -> torch.Tensor:
    """The official CTL for a batch of ``num_classes`` classes with the same number M >= 2 of samples each
    (any label order), all M rotations at once.

    In rotation r the union holds, per class k, the query ``q = x[k, r]`` and its leave-one-out centroid
    ``c``; ``c`` is the only other point of class k, so both anchors share ``d_ap = d(q, c)``, and ``d_an``
    is the distance to the nearest other-class point of the union, mined without gradient and recomputed
    for the chosen pair only. Every rotation has the same 2P anchors, so the mean over anchors then
    rotations is the plain mean.
    """
    N, D = x.shape
    P, M = num_classes, N // num_classes
    if not bool((inverse[1:] >= inverse[:-1]).all()):  # group by class; stable keeps each class's batch order
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

    Raises ``ValueError`` for bad input, a single class, or no class with two samples.
    """
    x, labels = _checked_batch(embeddings, labels)
    check_metric(distance)
    if variant not in ("paper", "official"):
        raise ValueError(f"unknown variant {variant!r}; choose 'paper' or 'official'")
    x = l2_normalize(x) if normalize else x.float()
    _, inverse, counts = _class_index(labels)
    check_centroid_batch(labels, counts)
    if variant == "paper":
        return _ctl_paper(x, inverse, counts, margin, distance)
    P = counts.shape[0]
    if bool((counts == x.shape[0] // P).all()):
        return _ctl_official_balanced(x, inverse, P, margin, distance)
    return _ctl_official_general(x, inverse, counts, margin, distance)


# --------------------------------------------------------------------------------------------------
# classification-side losses of the CTL model


def center_loss(features: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Center loss (Wen et al. 2016) in the strong-baseline normalisation:
    ``mean_i ||x_i - c_{y_i}||^2`` (squared Euclidean, summed over dimensions, averaged over the batch;
    no factor 1/2)."""
    x = features.float()
    return ((x - centers.float()[labels]) ** 2).sum(1).mean()


def label_smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Cross-entropy against smoothed targets ``(1 - epsilon) * onehot + epsilon / K`` (Szegedy et al.
    2016), averaged over the batch; ``K`` is the number of logit columns."""
    log_probs = F.log_softmax(logits.float(), dim=1)
    K = logits.shape[1]
    nll = -log_probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    uniform = -log_probs.mean(dim=1)
    return ((1.0 - epsilon) * nll + epsilon * uniform).mean() if K > 0 else _zero_loss(logits)
