"""The symmetric (each block once) nearest-neighbour pass against a stable argsort of the full matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from centrum.evaluation._symmetric import block_distance_function, symmetric_nearest_keys


@pytest.mark.parametrize("metric", ["squared_euclidean", "euclidean", "dot", "cosine"])
@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("side", [1, 4, 7, 100])
def test_symmetric_nearest_equals_stable_sort_with_ties(metric, exclude_self, side):
    gen = np.random.default_rng(side)
    x = torch.as_tensor(gen.integers(-2, 3, size=(23, 3)), dtype=torch.float32)
    x[5] = x[9]  # duplicates: ties everywhere, broken by index
    vectors = torch.nn.functional.normalize(x + 0.5, dim=1) if metric == "cosine" else x
    distances = block_distance_function(vectors, metric)
    full = distances(slice(0, 23), slice(0, 23)).double()
    full = torch.minimum(full, full.T)  # the one symmetric matrix (exact here for the integer metrics)
    if exclude_self:
        full.fill_diagonal_(float("inf"))
    k = 22 if exclude_self else 23
    row_max = torch.full((23,), float("-inf"))
    keys = symmetric_nearest_keys(23, k, distances, side, exclude_self, None if exclude_self else row_max)
    expected = torch.as_tensor(np.argsort(full.numpy(), axis=1, kind="stable")[:, :k])
    if metric != "cosine":  # float products of unit vectors may differ in the last bit between block shapes
        assert torch.equal(keys & 0xFFFFFFFF, expected)
    else:
        got = full.gather(1, keys & 0xFFFFFFFF)
        assert (got.diff(dim=1) >= -1e-6).all()  # ascending, up to the last bit of the products
    if not exclude_self and metric != "cosine":
        assert torch.equal(row_max.double(), full.max(1).values)
