"""The one distance object, :class:`centrum.distances.Metric`, against direct computations from the points:
pairwise, row-wise, from the Gram matrix, the in-place block product and its chunks, and its direction."""

from __future__ import annotations

import pytest
import torch

from centrum.distances import METRICS, Metric, pairwise_distance, pairwise_similarity
from centrum.losses.mining import topk_hardest


def points(n: int, d: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)).double()


def by_definition(name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The metric written from its definition, pair by pair, in float64."""
    out = torch.empty(x.shape[0], y.shape[0], dtype=torch.float64)
    for i in range(x.shape[0]):
        for j in range(y.shape[0]):
            diff = x[i] - y[j]
            out[i, j] = {
                "euclidean": diff.norm().clamp_min(1e-6),
                "squared_euclidean": diff @ diff,
                "cosine": 1 - x[i] @ y[j] / (x[i].norm() * y[j].norm()),
                "dot": -(x[i] @ y[j]),
            }[name]
    return out


@pytest.mark.parametrize("name", METRICS)
def test_pairwise_rowwise_and_gram_agree_with_the_definition(name):
    x, y = points(6), points(4, seed=1)
    metric = Metric(name)
    expected = by_definition(name, x, y)
    assert torch.allclose(metric.pairwise(x, y).double(), expected, atol=1e-5)
    assert torch.allclose(pairwise_distance(x, y, name).double(), expected, atol=1e-5)
    assert torch.allclose(metric.rowwise(x[:4], y).double(), expected.diagonal(), atol=1e-5)
    # from the Gram matrix of the raw points (the cosine divides by the norms itself)
    inner = x @ y.T
    sq_x, sq_y = (x * x).sum(1, keepdim=True), (y * y).sum(1).unsqueeze(0)
    assert torch.allclose(metric.from_gram(inner, sq_x, sq_y), expected, atol=1e-9)
    # a point's distance to itself: exactly the floor, not rounding noise
    self_d = metric.pairwise(x).diagonal()
    if name == "euclidean":
        assert torch.equal(self_d, torch.full_like(self_d, 1e-6))
    if name == "squared_euclidean":
        assert torch.equal(self_d, torch.zeros_like(self_d))


@pytest.mark.parametrize("name", METRICS)
def test_block_product_and_chunks_equal_pairwise(name):
    q, g = points(7).float(), points(9, seed=2).float()
    metric = Metric(name)
    full = metric.pairwise(q, g)
    blocks = list(metric.chunked(q, g, rows=3))
    assert [b.stop - b.start for b, _ in blocks] == [3, 3, 1]
    assert torch.allclose(torch.cat([d for _, d in blocks]), full, atol=1e-5)
    prepared = metric.product_distances(metric.prepare(q), metric.prepare(g))
    assert torch.allclose(prepared, full, atol=1e-5)
    with pytest.raises(ValueError, match="rows must be a positive integer"):
        next(metric.chunked(q, g, rows=0))


def test_similarities_read_larger_as_closer():
    x = points(5).float()
    cos, dot = Metric("cosine", similarity=True), Metric("dot", similarity=True)
    assert not cos.smaller_is_closer and Metric("cosine").smaller_is_closer
    assert torch.allclose(cos.pairwise(x), 1 - Metric("cosine").pairwise(x), atol=1e-6)
    assert torch.allclose(dot.pairwise(x), x @ x.T)
    assert torch.allclose(pairwise_similarity(x, metric="dot"), x @ x.T)
    with pytest.raises(ValueError, match="only 'cosine' and 'dot' can be similarities"):
        Metric("euclidean", similarity=True)
    with pytest.raises(ValueError, match="unknown distance 'manhattan'"):
        Metric("manhattan")


@pytest.mark.parametrize("similarity", [False, True])
def test_direction_helpers_pick_the_closest(similarity):
    metric = Metric("dot", similarity=similarity)
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.0], [0.0, 1.0]])
    values = metric.pairwise(x)
    mask = ~torch.eye(4, dtype=torch.bool)
    mask[2] = False  # row 2 may choose nothing
    value, column, valid = metric.nearest(values, mask)
    assert valid.tolist() == [True, True, False, True]
    assert column.tolist() == [1, 0, 0, 1]  # the largest inner product among the others
    assert torch.allclose(value, values[torch.arange(4), column] * valid)
    _, index, ok = topk_hardest(values, mask, k=2, largest=metric.similarity)
    assert index[0].tolist() == [1, 3] and ok[2].tolist() == [False, False]
    far, has = metric.farthest(values, mask)
    assert far[0].item() == values[0, 2].item() and not has[2]
    order = metric.argsort(values[0])
    assert order.tolist()[:2] == [0, 1]  # itself, then the nearest other
