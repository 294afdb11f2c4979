"""Product retrieval and metric-learning metrics against loop references, scikit-learn and
pytorch-metric-learning."""

from __future__ import annotations

import importlib.util
import itertools
import pathlib

import numpy as np
import pytest
import torch

from centrum.evaluation import (
    dml_metrics,
    evaluate_protocol,
    format_metrics_table,
    kmeans_labels,
    normalized_mutual_info,
    pairwise_f1,
    product_metrics,
)

_spec = importlib.util.spec_from_file_location("_reference", pathlib.Path(__file__).with_name("_reference.py"))
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)


def _products_reference(dist, ql, gl, ks):
    firsts, aps = [], []
    for i in range(dist.shape[0]):
        result = ref.ranking_scores(dist[i], gl == ql[i], np.zeros(len(gl), bool))
        if result is not None:
            firsts.append(result[0])
            aps.append(result[1])
    firsts = np.array(firsts)
    out = {f"Acc@{k}": float(np.mean(firsts <= k)) for k in ks}
    out["mAP"] = float(np.mean(aps))
    out["num_valid_queries"] = len(firsts)
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_products_per_image_matches_reference_with_ties(seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 3, (30, 4), generator=gen).float()
    g = torch.randint(0, 3, (120, 4), generator=gen).float()
    ql, gl = torch.randint(0, 40, (30,), generator=gen), torch.randint(0, 35, (120,), generator=gen)
    ks = (1, 3, 10, 50)
    ours = product_metrics(q, g, ql, gl, ks=ks, metric="squared_euclidean", chunk_size=4)
    expected = _products_reference(ref.distance_matrix(q, g, "squared_euclidean"), ql.numpy(), gl.numpy(), ks)
    assert ours["num_valid_queries"] == expected["num_valid_queries"] < 30  # ids 35..39 are missing
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_products_with_centroids_matches_reference():
    gen = torch.Generator().manual_seed(3)
    q, g = torch.randn(25, 8, generator=gen), torch.randn(90, 8, generator=gen)
    ql, gl = torch.randint(0, 12, (25,), generator=gen), torch.randint(0, 15, (90,), generator=gen)
    labels = torch.unique(gl)
    gn = torch.nn.functional.normalize(g, dim=1)
    centroids = torch.stack([gn[gl == lab].double().mean(0).float() for lab in labels])
    expected = _products_reference(ref.distance_matrix(q, centroids, "cosine"), ql.numpy(), labels.numpy(), (1, 10))
    ours = product_metrics(q, g, ql, gl, centroids=True, ks=(1, 10))
    assert ours["num_gallery_entries"] == len(labels)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def _dml_data(seed, n=120, dim=6, classes=15, integer=False):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    if integer:
        return torch.randint(0, 3, (n, dim), generator=gen).float(), labels
    centers = torch.randn(classes, dim, generator=gen)
    return centers[labels] + 0.8 * torch.randn(n, dim, generator=gen), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dml_matches_loop_reference_with_ties_and_singletons(seed):
    x, labels = _dml_data(seed, integer=True, classes=50)  # some classes have one image: R = 0
    ks = (1, 2, 4, 8, 32)
    ours = dml_metrics(x, labels, recall_ks=ks, metric="euclidean", clustering=False, chunk_size=11)
    expected = ref.dml_reference(ref.distance_matrix(x, x, "euclidean"), labels.numpy(), ks)
    assert ours["num_queries_with_match"] < ours["num_queries"]
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_dml_matches_pytorch_metric_learning():
    pml = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    x, labels = _dml_data(4, n=300, classes=20)
    calc = pml.AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
        k="max_bin_count",
        device=torch.device("cpu"),
    )
    theirs = calc.get_accuracy(x, labels)  # faiss L2 k-NN on the raw embeddings, the query itself excluded
    ours = dml_metrics(x, labels, metric="euclidean", clustering=False)
    assert ours["Recall@1"] == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours["MAP@R"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)
    assert ours["R-Precision"] == pytest.approx(theirs["r_precision"], abs=1e-6)
    # Recall@K for K > 1 from PML's k-nearest neighbour labels, as used by DML papers
    knn = pml.FaissKNN()(x, 9, x, True)[1]
    for k in (2, 4, 8):
        expected = (labels[knn[:, :k]] == labels[:, None]).any(1).double().mean().item()
        assert ours[f"Recall@{k}"] == pytest.approx(expected, abs=1e-6)


def test_nmi_equals_scikit_learn_and_f1_equals_pair_loop():
    from sklearn.metrics import normalized_mutual_info_score

    gen = np.random.default_rng(0)
    for n, a, b in [(60, 5, 7), (200, 20, 3), (10, 1, 4)]:
        labels, clusters = gen.integers(0, a, n), gen.integers(0, b, n) * 3 + 100
        assert normalized_mutual_info(labels, clusters) == pytest.approx(
            normalized_mutual_info_score(labels, clusters), abs=1e-9
        )
        tp = same_cluster = same_class = 0
        for i, j in itertools.combinations(range(n), 2):
            same_class += labels[i] == labels[j]
            same_cluster += clusters[i] == clusters[j]
            tp += labels[i] == labels[j] and clusters[i] == clusters[j]
        p, r = tp / same_cluster, tp / same_class
        assert pairwise_f1(labels, clusters) == pytest.approx(2 * p * r / (p + r), abs=1e-12)
    assert normalized_mutual_info([1, 1, 1], [0, 0, 0]) == 1.0
    assert pairwise_f1([0, 1, 2], [0, 1, 2]) == 0.0  # no pair at all


def test_dml_clustering_is_seeded_and_recovers_separated_classes():
    x, labels = _dml_data(5, n=150, classes=6)
    x = x * 0 + torch.nn.functional.one_hot(labels, 6).float() * 10 + 0.01 * torch.randn(150, 6)
    out = dml_metrics(x, labels, seed=3)
    assert out["NMI"] == pytest.approx(1.0) and out["F1"] == pytest.approx(1.0)
    a, b = kmeans_labels(torch.randn(80, 4), 5, seed=1), kmeans_labels(torch.randn(80, 4) * 0 + torch.randn(80, 4), 5)
    assert a.shape == b.shape == (80,)
    y = torch.randn(80, 4)
    np.testing.assert_array_equal(kmeans_labels(y, 5, seed=2), kmeans_labels(y, 5, seed=2))
    pytest.importorskip("faiss")
    assert kmeans_labels(y, 5, seed=2, backend="faiss").shape == (80,)
    with pytest.raises(ValueError, match="num_clusters"):
        kmeans_labels(y, 81)


def test_evaluate_protocol_dispatch_and_errors():
    x, labels = _dml_data(6, n=60)
    arrays = {"embeddings": x.numpy(), "labels": labels.numpy()}
    assert evaluate_protocol("dml", arrays, clustering=False) == dml_metrics(x, labels, clustering=False)
    qa = {"query": x[:20], "gallery": x[20:], "query_labels": labels[:20], "gallery_labels": labels[20:]}
    assert evaluate_protocol("products-centroids", qa)["num_gallery_entries"] == len(torch.unique(labels[20:]))
    assert "mINP" in evaluate_protocol("reid", qa)
    with pytest.raises(ValueError, match="missing gallery_labels"):
        evaluate_protocol("reid", {k: v for k, v in qa.items() if k != "gallery_labels"})
    with pytest.raises(ValueError, match="unknown protocol 'cmc'"):
        evaluate_protocol("cmc", qa)
    with pytest.raises(ValueError, match="labels has 59 entries but embeddings has 60 rows"):
        dml_metrics(x, labels[:59])
    with pytest.raises(ValueError, match="recall_ks"):
        dml_metrics(x, labels, recall_ks=(0,))


def test_format_metrics_table():
    table = format_metrics_table(
        {
            "reid": {"mAP": 0.8567, "Rank-1": 0.9, "cmc": [0.9, 1.0], "num_valid_queries": 3368},
            "reid-centroids": {"mAP": 0.9},
        }
    )
    lines = table.splitlines()
    assert lines[0].split() == ["mAP", "(%)", "Rank-1", "(%)", "num_valid_queries"]
    assert lines[2].split() == ["reid", "85.67", "90.00", "3368"]
    assert lines[3].split() == ["reid-centroids", "90.00", "-", "-"]
    assert "cmc" not in table
