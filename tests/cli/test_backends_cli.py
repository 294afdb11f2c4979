"""``centrum index build --backend ... [--kind] (--embeddings | --manifest)`` and ``centrum index search`` on
every backend: the top-k through the CLI equals a brute-force reference (exact backends) or reaches a recall
floor (approximate ones), a manifest of shards indexes like the .npz it came from, and bad input exits 2 with one
line."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

from centrum.cli import main
from centrum.inference.shards import ShardInputs, embed_all

N_CLASSES, PER_CLASS, DIM, K = 12, 6, 16, 5


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(N_CLASSES, DIM))
    labels = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    gallery = (centres[labels] + 0.4 * rng.normal(size=(len(labels), DIM))).astype(np.float32)
    queries = (centres[np.arange(N_CLASSES)] + 0.4 * rng.normal(size=(N_CLASSES, DIM))).astype(np.float32)
    return gallery, labels, queries


def write_npz(tmp_path, data):
    gallery, labels, queries = data
    g, q = tmp_path / "g.npz", tmp_path / "q.npz"
    np.savez(
        g,
        embeddings=gallery,
        labels=labels,
        paths=np.array([f"/images/{i:03d}.png" for i in range(len(labels))]),
        cameras=(np.arange(len(labels)) % 2).astype(np.int64),
        class_names=np.array([f"c{i}" for i in range(N_CLASSES)]),
    )
    np.savez(
        q, query=queries, query_labels=np.arange(N_CLASSES), class_names=np.array([f"c{i}" for i in range(N_CLASSES)])
    )
    return g, q


def cosine_topk(gallery, queries, k):
    """Brute-force reference: the k gallery rows of smallest 1 - cos, ties by row."""
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    d = 1.0 - q @ g.T
    return np.argsort(d, axis=1, kind="stable")[:, :k], np.sort(d, axis=1)[:, :k]


def centroid_topk(gallery, labels, queries, k):
    """Reference centroids: the mean of each class's L2-normalised embeddings, ranked by 1 - cos."""
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    means = np.stack([g[labels == c].mean(0) for c in range(N_CLASSES)])
    return cosine_topk(means, queries, k)


def build_and_search(tmp_path, g, q, backend, kind, extra=()):
    out, res = tmp_path / f"{backend}-{kind}", tmp_path / f"{backend}-{kind}.json"
    command = ["index", "build", "--embeddings", str(g), "--out", str(out), "--backend", backend, "--kind", kind]
    assert main([*command, *extra]) == 0
    assert main(["index", "search", str(out), "--queries", str(q), "-k", str(K), "--json", str(res)]) == 0
    return json.loads(res.read_text())


EXACT = [("torch", ()), ("faiss-flat", ()), ("qdrant", ("--qdrant-path", "QDRANT"))]


@pytest.mark.parametrize(("backend", "extra"), EXACT)
@pytest.mark.parametrize("kind", ["image", "centroid"])
def test_exact_backends_return_the_brute_force_top_k_through_the_cli(tmp_path, data, backend, extra, kind, capsys):
    if backend == "qdrant":
        pytest.importorskip("qdrant_client")
        extra = ("--qdrant-path", str(tmp_path / "qdrant"))
    g, q = write_npz(tmp_path, data)
    result = build_and_search(tmp_path, g, q, backend, kind, extra)
    gallery, labels, queries = data
    if kind == "image":
        rows, dist = cosine_topk(gallery, queries, K)
        assert result["indices"] == rows.tolist()  # ids are the .npz rows
        assert result["labels"] == labels[rows].tolist()
        assert result["paths"][0] == [f"/images/{r:03d}.png" for r in rows[0]]
    else:
        rows, dist = centroid_topk(gallery, labels, queries, K)
        assert result["indices"] == rows.tolist() and result["labels"] == rows.tolist()  # id = class label
    np.testing.assert_allclose(result["distances"], dist, atol=1e-5)
    assert result["classes"][0][0] == f"c{result['labels'][0][0]}"  # class names kept from the .npz
    assert "top-1 label accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["faiss-ivfpq", "faiss-hnsw"])
def test_approximate_backends_reach_a_recall_floor_through_the_cli(tmp_path, data, backend):
    g, q = write_npz(tmp_path, data)
    result = build_and_search(tmp_path, g, q, backend, "image")
    rows, _ = cosine_topk(data[0], data[2], K)
    recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(result["indices"], rows.tolist(), strict=True)])
    print(f"{backend} recall@{K} vs exact: {recall:.3f}")
    assert recall >= (0.95 if backend == "faiss-hnsw" else 0.5)


def test_a_manifest_of_shards_indexes_like_the_npz_it_holds(tmp_path, data):
    gallery, labels, queries = data
    paths = [f"/images/{i:03d}.png" for i in range(len(labels))]
    row_of = {p: i for i, p in enumerate(paths)}
    inputs = ShardInputs.of(paths, labels=labels, class_names=[f"c{i}" for i in range(N_CLASSES)])
    embed_all(inputs, tmp_path / "shards", 3, lambda batch: gallery[[row_of[p] for p in batch]], batch_size=7)
    g, q = write_npz(tmp_path, data)
    for source, name in ((["--manifest", str(tmp_path / "shards")], "m"), (["--embeddings", str(g)], "n")):
        for backend in ("torch", "faiss-flat"):  # the built-in format, and the backend one
            out = tmp_path / f"{name}-{backend}"
            assert main(["index", "build", *source, "--out", str(out), "--backend", backend]) == 0
            res = tmp_path / f"{name}-{backend}.json"
            assert main(["index", "search", str(out), "--queries", str(q), "-k", str(K), "--json", str(res)]) == 0
    by_npz = json.loads((tmp_path / "n-torch.json").read_text())
    assert json.loads((tmp_path / "m-torch.json").read_text())["indices"] == by_npz["indices"]
    assert json.loads((tmp_path / "m-faiss-flat.json").read_text())["labels"] == by_npz["labels"]
    assert by_npz["indices"] == cosine_topk(gallery, queries, K)[0].tolist()
    out = tmp_path / "m-centroid"
    assert main(["index", "build", "--manifest", str(tmp_path / "shards" / "manifest.json"), "--out", str(out),
                 "--backend", "faiss-flat", "--kind", "centroid"]) == 0  # fmt: skip
    res = tmp_path / "mc.json"
    assert main(["index", "search", str(out), "--queries", str(q), "-k", "1", "--json", str(res)]) == 0
    assert json.loads(res.read_text())["labels"] == centroid_topk(gallery, labels, queries, 1)[0].tolist()


def test_a_legacy_build_is_still_read_by_the_builtin_loader(tmp_path, data):
    from centrum.retrieval import EmbeddingIndex, load_index

    g, _ = write_npz(tmp_path, data)
    assert (
        main(["index", "build", "--embeddings", str(g), "--out", str(tmp_path / "i"), "--backend", "faiss-flat"]) == 0
    )
    assert isinstance(load_index(tmp_path / "i"), EmbeddingIndex)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--backend", "annoy"], "unknown --backend 'annoy'"),
        (["--manifest", "MISSING"], "no shard manifest at"),
        (["--backend", "qdrant"], "exactly one of --qdrant-path DIR (local) or --qdrant-url URL"),
        (["--backend", "faiss-flat", "--qdrant-path", "x"], "need --backend qdrant"),
        (["--backend", "faiss-ivf", "--kind", "image"], "--backend faiss-ivf is the built-in format's IVF-Flat"),
        (["--kind", "tree"], None),
    ],
)
def test_bad_build_input_exits_2_with_one_line(tmp_path, data, capsys, args, needle):
    g, _ = write_npz(tmp_path, data)
    args = [str(tmp_path / "nowhere") if a == "MISSING" else a for a in args]
    source = [] if "--manifest" in args else ["--embeddings", str(g)]
    with pytest.raises(SystemExit) if needle is None else contextlib.nullcontext():
        code = main(["index", "build", *source, "--out", str(tmp_path / "o"), *args])
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err
        assert not (tmp_path / "o" / "centrum_index.json").exists()


def test_an_unreachable_qdrant_server_is_one_line_exit_2(tmp_path, data, capsys):
    pytest.importorskip("qdrant_client")
    g, _ = write_npz(tmp_path, data)
    url = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once
    assert main(["index", "build", "--embeddings", str(g), "--out", str(tmp_path / "o"), "--backend", "qdrant",
                 "--qdrant-url", url]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"qdrant at {url}" in err
