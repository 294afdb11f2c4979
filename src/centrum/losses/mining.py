"""Mining helpers: pick the hardest, semi-hard or k hardest entries of a distance matrix under a mask.

Every helper takes a dissimilarity matrix (smaller = closer) and a boolean mask of the entries that may
be chosen, and returns the chosen values with a validity flag, so that rows with nothing to choose can
be dropped instead of silently contributing ``inf``. They are pure tensor functions, vectorised over
rows; the selection itself carries no gradient, the returned values do.
"""

from __future__ import annotations

import torch


def _check_same_shape(values: torch.Tensor, mask: torch.Tensor) -> None:
    if values.shape != mask.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)} but values have shape {tuple(values.shape)}")


def hardest_positive(dist: torch.Tensor, pos_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the largest distance among the entries where ``pos_mask`` is true (the hardest positive).

    Returns ``(values, valid)``: ``values[i]`` is the hardest positive distance of anchor ``i`` (0 where
    the row has no positive) and ``valid[i]`` says whether it has one.
    """
    _check_same_shape(dist, pos_mask)
    masked = dist.masked_fill(~pos_mask, float("-inf"))
    values, _ = masked.max(dim=-1)
    valid = pos_mask.any(dim=-1)
    return values.masked_fill(~valid, 0.0), valid


def hardest_negative(dist: torch.Tensor, neg_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the smallest distance among the entries where ``neg_mask`` is true (the hardest negative).

    Returns ``(values, valid)`` as :func:`hardest_positive` (0 where the row has no negative).
    """
    _check_same_shape(dist, neg_mask)
    masked = dist.masked_fill(~neg_mask, float("inf"))
    values, _ = masked.min(dim=-1)
    valid = neg_mask.any(dim=-1)
    return values.masked_fill(~valid, 0.0), valid


def semihard_negative(
    dist_ap: torch.Tensor, dist_an: torch.Tensor, neg_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Semi-hard negative for every anchor-positive pair (Schroff et al. 2015, as in TensorFlow's
    ``triplet_semihard_loss``).

    ``dist_ap``: A x P anchor-positive distances; ``dist_an``: A x S anchor-negative distances with
    ``neg_mask`` (A x S). For pair ``(a, p)`` the chosen negative is the nearest negative that is farther
    than the positive (``d_an > d_ap``); when there is none, the farthest negative of the anchor. Returns
    ``(values, valid)``, both A x P; ``valid`` is false where the anchor has no negative.
    """
    _check_same_shape(dist_an, neg_mask)
    if dist_ap.shape[0] != dist_an.shape[0]:
        raise ValueError(f"dist_ap has {dist_ap.shape[0]} anchors but dist_an has {dist_an.shape[0]}")
    an = dist_an.unsqueeze(1)  # A x 1 x S
    farther = (an > dist_ap.unsqueeze(2)) & neg_mask.unsqueeze(1)  # A x P x S
    nearest_farther, _ = an.expand(-1, dist_ap.shape[1], -1).masked_fill(~farther, float("inf")).min(dim=-1)
    farthest, _ = dist_an.masked_fill(~neg_mask, float("-inf")).max(dim=-1, keepdim=True)  # A x 1
    chosen = torch.where(farther.any(dim=-1), nearest_farther, farthest.expand_as(dist_ap))
    valid = neg_mask.any(dim=-1, keepdim=True).expand_as(dist_ap)
    return chosen.masked_fill(~valid, 0.0), valid


def topk_hardest(
    dist: torch.Tensor,
    mask: torch.Tensor,
    k: int,
    groups: torch.Tensor | None = None,
    num_groups: int | None = None,
    largest: bool = False,
    group_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` smallest distances per row, or per row and per group of columns (the ``k`` largest values
    with ``largest=True``, for similarities).

    ``dist``: R x K distances; ``mask``: R x K entries that may be chosen. Without ``groups`` returns
    ``(values, index, valid)`` of shape R x k. With ``groups`` (K integers in ``[0, num_groups)``, the group
    of each column, e.g. its class) the k smallest are taken within each group separately and the result
    has shape R x num_groups x k. ``index`` holds column indices into ``dist``; entries with fewer than k
    candidates are marked invalid (value 0, index 0). Vectorised: columns are scattered into a padded
    R x G x m tensor, no loop over groups. ``group_size``: the number of columns in every group, when the caller
    knows that all groups have it (then no shape is read off the data, and the host does not wait on the device).
    """
    _check_same_shape(dist, mask)
    fill = float("-inf") if largest else float("inf")
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    if groups is None:
        kk = min(k, dist.shape[-1])
        masked = dist.detach().masked_fill(~mask, fill)
        top, index = masked.topk(kk, dim=-1, largest=largest)
        valid = torch.isfinite(top)
        if kk < k:
            pad = k - kk
            index = torch.cat([index, index.new_zeros(index.shape[0], pad)], dim=1)
            valid = torch.cat([valid, valid.new_zeros(valid.shape[0], pad)], dim=1)
        values = dist.gather(-1, index).masked_fill(~valid, 0.0)
        return values, index.masked_fill(~valid, 0), valid
    if groups.ndim != 1 or groups.shape[0] != dist.shape[-1]:
        raise ValueError(f"groups must have one entry per column ({dist.shape[-1]}), got shape {tuple(groups.shape)}")
    G = int(num_groups) if num_groups is not None else int(groups.max()) + 1
    # Slot of each column inside its group: rank among the columns of the same group, in column order.
    order = torch.argsort(groups, stable=True)
    if group_size is not None:  # equal groups: no count read off the data
        m = int(group_size)
    else:
        counts = torch.bincount(groups, minlength=G)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.empty_like(groups)
        slot[order] = torch.arange(groups.shape[0], device=groups.device) - starts[groups[order]]
        m = int(counts.max())
    masked = dist.detach().masked_fill(~mask, fill)
    if group_size is not None or m * G == groups.shape[0]:
        # equal group sizes (balanced P x M batches): a column permutation and a view, no scatter
        column_at = order.view(G, m)
        padded = masked.index_select(1, order).view(dist.shape[0], G, m)
    else:
        column_at = torch.zeros(G, m, dtype=torch.long, device=dist.device)
        column_at[groups, slot] = torch.arange(groups.shape[0], device=dist.device)
        padded = dist.new_full((dist.shape[0], G, m), fill)
        padded[:, groups, slot] = masked
    kk = min(k, m)
    top, pos = padded.topk(kk, dim=-1, largest=largest)  # R x G x kk
    valid = torch.isfinite(top)
    index = column_at.unsqueeze(0).expand(dist.shape[0], -1, -1).gather(-1, pos)
    if kk < k:
        pad = k - kk
        index = torch.cat([index, index.new_zeros(*index.shape[:2], pad)], dim=-1)
        valid = torch.cat([valid, valid.new_zeros(*valid.shape[:2], pad)], dim=-1)
    index = index.masked_fill(~valid, 0)
    values = dist.gather(-1, index.flatten(1)).view_as(index).masked_fill(~valid, 0.0)
    return values, index, valid
