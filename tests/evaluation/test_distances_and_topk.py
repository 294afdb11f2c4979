"""The exact top-k path of the metric-learning protocol and the distance-matrix input of the re-id and
product protocols, against the plain-loop references (ties broken by index)."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest
import torch

from centrum.cli import main
from centrum.evaluation import (
    dml_metrics,
    evaluate_protocol,
    product_metrics,
    reid_centroid_metrics,
    reid_metrics,
)
from centrum.evaluation._ranking import nearest_in_order

_spec = importlib.util.spec_from_file_location("_reference", pathlib.Path(__file__).with_name("_reference.py"))
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

DML_KEYS = ("MAP@R", "R-Precision")


def _assert_dml(x, labels, ks, metric="euclidean", chunks=(1, 7, None)):
    expected = ref.dml_reference(ref.distance_matrix(x, x, metric), np.asarray(labels), ks)
    for chunk in chunks:
        ours = dml_metrics(x, labels, recall_ks=ks, metric=metric, clustering=False, chunk_size=chunk)
        for key, value in expected.items():
            if np.isnan(value):
                assert np.isnan(ours[key]), (key, chunk)
            else:
                assert ours[key] == pytest.approx(value, abs=1e-6), (key, chunk)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_dml_ties_straddle_the_kth_place(seed):
    # values in {0, 1}^3: 8 distinct points for 90 items, so dozens of exact ties at every place
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (90, 3), generator=gen).float()
    labels = torch.randint(0, 12, (90,), generator=gen)
    _assert_dml(x, labels, (1, 2, 3, 5, 8, 40))


def test_dml_all_items_identical_and_k_beyond_the_set():
    x = torch.zeros(25, 4)
    labels = torch.arange(25) % 4
    _assert_dml(x, labels, (1, 3, 24, 25, 1000))  # K > N - 1: every query with R > 0 hits
    out = dml_metrics(x, labels, recall_ks=(1000,), metric="euclidean", clustering=False)
    assert out["Recall@1000"] == 1.0


def test_dml_first_hit_far_beyond_the_top_k():
    # on a line: the only other image of the query's class is the farthest one -> counted, not listed
    x = torch.arange(60, dtype=torch.float32)[:, None]
    labels = torch.arange(60)
    labels[59] = 0
    labels[30] = 1
    x[31] = 31.0 - 30.0 - 29.0  # x = -28: at distance 29 of item 1, tied with item 30
    _assert_dml(x, labels, (1, 2, 4, 8, 56, 57, 58, 59), chunks=(1, 5, None))
    ours = dml_metrics(x, labels, recall_ks=(1, 57, 58, 59), metric="euclidean", clustering=False)
    # item 1 ranks item 30 at 30 (tied with item 31, a later index); item 30 ranks item 1 at 56 (nearer:
    # 2..29 and 32..58); item 59 ranks item 0 at 58 (item 31 is farther) and item 0 ranks item 59 last
    assert ours["Recall@1"] == 0.0
    assert ours["Recall@57"] == pytest.approx(2 / 60)
    assert ours["Recall@58"] == pytest.approx(3 / 60)
    assert ours["Recall@59"] == pytest.approx(4 / 60)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_dml_tiny_sets(n):
    x = torch.arange(n, dtype=torch.float32)[:, None]
    labels = torch.zeros(n, dtype=torch.long)
    out = dml_metrics(x, labels, recall_ks=(1, 5), metric="euclidean", clustering=False)
    if n == 1:
        assert out["Recall@1"] == 0.0 and np.isnan(out["MAP@R"])
    else:
        _assert_dml(x, labels, (1, 5))
    singletons = dml_metrics(x, torch.arange(n), recall_ks=(1,), metric="euclidean", clustering=False)
    assert singletons["Recall@1"] == 0.0 and singletons["num_queries_with_match"] == 0


@pytest.mark.parametrize("metric", ["cosine", "squared_euclidean", "dot"])
def test_dml_float_data_all_metrics(metric):
    gen = torch.Generator().manual_seed(7)
    labels = torch.randint(0, 9, (150,), generator=gen)
    x = torch.randn(9, 8, generator=gen)[labels] + torch.randn(150, 8, generator=gen)
    _assert_dml(x, labels, (1, 2, 4, 8, 16, 100, 149, 200), metric=metric, chunks=(13, None))


def test_nearest_in_order_is_a_stable_sort_with_exclusions():
    gen = torch.Generator().manual_seed(0)
    d = torch.randint(0, 4, (30, 50), generator=gen).float()
    d[torch.arange(30), torch.arange(30)] = float("nan")
    d[0, 5] = -0.0  # equal to 0.0: tied by index
    for k in (1, 3, 10, 49):
        expected = torch.argsort(torch.nan_to_num(d, nan=float("inf")), dim=1, stable=True)[:, :k]
        assert torch.equal(nearest_in_order(d.clone(), k), expected), k


# --- distance-matrix input ------------------------------------------------------------------------
def _reid_data(seed, nq=40, ng=150, dim=4, ids=40, cams=3):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 3, (nq, dim), generator=gen).float()
    g = torch.randint(0, 3, (ng, dim), generator=gen).float()
    ql = torch.randint(1, ids, (nq,), generator=gen)
    gl = torch.randint(0, ids + 3, (ng,), generator=gen)
    return q, g, ql, gl, torch.randint(0, cams, (nq,), generator=gen), torch.randint(0, cams, (ng,), generator=gen)


@pytest.mark.parametrize("seed", [0, 1])
def test_reid_from_distances_equals_embeddings_and_reference(seed):
    q, g, ql, gl, qc, gc = _reid_data(seed)
    dist = ref.distance_matrix(q, g, "euclidean")  # float32, many exact ties
    from_embeddings = reid_metrics(q, g, ql, gl, qc, gc, metric="euclidean", chunk_size=7)
    expected = ref.reid_reference(dist, ql.numpy(), gl.numpy(), qc.numpy(), gc.numpy())
    for given in (dist, torch.from_numpy(dist), dist.astype(np.float64)):  # float64 holding float32 values
        ours = reid_metrics(
            query_labels=ql, gallery_labels=gl, query_cameras=qc, gallery_cameras=gc, distances=given, chunk_size=7
        )
        assert ours == from_embeddings
        for key in ("mAP", "mINP", "Rank-1", "Rank-5", "Rank-10", "Rank-20", "num_valid_queries"):
            assert ours[key] == pytest.approx(expected[key], abs=1e-6), key


def test_float64_distances_finer_than_float32_are_ranked_in_float64():
    q, g, ql, gl, qc, gc = _reid_data(3)
    dist = ref.distance_matrix(q, g, "euclidean").astype(np.float64)
    rng = np.random.default_rng(0)
    dist += rng.integers(0, 3, dist.shape) * 1e-12  # splits some float32 ties, keeps others
    assert not np.array_equal(dist.astype(np.float32).astype(np.float64), dist)
    expected = ref.reid_reference(dist, ql.numpy(), gl.numpy(), qc.numpy(), gc.numpy())
    for chunk in (5, None):
        ours = reid_metrics(None, None, ql, gl, qc, gc, distances=dist, chunk_size=chunk)
        for key in ("mAP", "mINP", "Rank-1", "Rank-5", "Rank-10", "Rank-20"):
            assert ours[key] == pytest.approx(expected[key], abs=1e-6), key
        np.testing.assert_allclose(ours["cmc"], expected["cmc"], atol=1e-6)
    products = product_metrics(query_labels=ql, gallery_labels=gl, distances=dist, ks=(1, 5))
    assert products["num_valid_queries"] == int(np.isin(ql.numpy(), gl.numpy()).sum())


def test_products_from_distances_equals_embeddings():
    q, g, ql, gl, _, _ = _reid_data(4)
    dist = ref.distance_matrix(q, g, "squared_euclidean")
    a = product_metrics(q, g, ql, gl, metric="squared_euclidean", ks=(1, 3, 10), chunk_size=9)
    b = product_metrics(query_labels=ql, gallery_labels=gl, distances=dist, ks=(1, 3, 10), chunk_size=9)
    assert a == b
    fortran = np.asfortranarray(dist)  # a non-contiguous tensor once wrapped
    assert product_metrics(query_labels=ql, gallery_labels=gl, distances=fortran, ks=(1, 3, 10)) == a


def test_distances_input_errors():
    q, g, ql, gl, qc, gc = _reid_data(5, nq=4, ng=12)
    dist = ref.distance_matrix(q, g, "euclidean")
    with pytest.raises(ValueError, match=r"query_labels has 3 entries but distances has 4 rows"):
        reid_metrics(query_labels=ql[:3], gallery_labels=gl, distances=dist)
    with pytest.raises(ValueError, match=r"gallery_labels has 12 entries but distances has 11 columns"):
        reid_metrics(query_labels=ql, gallery_labels=gl, distances=dist[:, :11])
    with pytest.raises(ValueError, match="gallery_cameras has 10 entries but gallery has 12 rows"):
        reid_metrics(None, None, ql, gl, qc, gc[:10], distances=dist)
    bad = dist.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"distances contains NaN values in 1 row\(s\): 2"):
        reid_metrics(query_labels=ql, gallery_labels=gl, distances=bad)
    with pytest.raises(ValueError, match="2-D"):
        product_metrics(query_labels=ql, gallery_labels=gl, distances=dist[0])
    with pytest.raises(ValueError, match="not both"):
        reid_metrics(q, g, ql, gl, distances=dist)
    with pytest.raises(ValueError, match="distances matrix"):
        reid_metrics(None, g, ql, gl)
    with pytest.raises(ValueError, match="query_labels is required"):
        reid_metrics(distances=dist, gallery_labels=gl)
    with pytest.raises(ValueError, match="needs query and gallery embeddings"):
        reid_centroid_metrics(None, None, ql, gl, distances=dist)
    with pytest.raises(ValueError, match="needs query and gallery embeddings"):
        product_metrics(query_labels=ql, gallery_labels=gl, distances=dist, centroids=True)
    inf = dist.copy()
    inf[0, :] = np.inf  # allowed: infinitely far, ties broken by gallery order
    assert reid_metrics(query_labels=ql, gallery_labels=gl, distances=inf)["num_queries"] == 4


def test_evaluate_protocol_and_cli_with_distances(tmp_path, capsys):
    q, g, ql, gl, qc, gc = _reid_data(6)
    dist = ref.distance_matrix(q, g, "cosine")
    arrays = {"distances": dist, "query_labels": ql.numpy(), "gallery_labels": gl.numpy()}
    with_cams = {**arrays, "query_cameras": qc.numpy(), "gallery_cameras": gc.numpy()}
    assert evaluate_protocol("reid", with_cams) == reid_metrics(q, g, ql, gl, qc, gc)
    assert evaluate_protocol("products", arrays) == product_metrics(q, g, ql, gl)
    with pytest.raises(ValueError, match="needs query and gallery embeddings to build centroids"):
        evaluate_protocol("reid-centroids", with_cams)
    with pytest.raises(ValueError, match=r"missing gallery_labels"):
        evaluate_protocol("reid", {"distances": dist, "query_labels": ql.numpy()})
    with pytest.raises(ValueError, match="both distances and query/gallery"):
        evaluate_protocol("reid", {**arrays, "query": q.numpy(), "gallery": g.numpy()})
    path = tmp_path / "dist.npz"
    np.savez(path, **with_cams)
    out = tmp_path / "m.json"
    assert main(["evaluate", "--embeddings", str(path), "--protocol", "reid", "--json", str(out)]) == 0
    import json

    assert json.loads(out.read_text())["reid"]["mAP"] == pytest.approx(reid_metrics(q, g, ql, gl, qc, gc)["mAP"])
    capsys.readouterr()
    assert main(["evaluate", "--embeddings", str(path), "--protocol", "reid-centroids"]) == 2
    assert "needs query and gallery embeddings" in capsys.readouterr().err


def test_relevant_ranks_splits_blocks_too_large_for_one_key(monkeypatch):
    from centrum.evaluation import _ranking

    q, g, ql, gl, qc, gc = _reid_data(8)
    expected = reid_metrics(q, g, ql, gl, qc, gc, metric="euclidean")
    monkeypatch.setattr(_ranking, "ROW_COLUMN_BITS", 9)  # 150 columns (8 bits): at most 2 rows per key space
    assert reid_metrics(q, g, ql, gl, qc, gc, metric="euclidean") == expected
