"""The service takes over an index folder that ``centrum index build`` wrote on any backend that keeps its
embeddings (built-in, torch, faiss-flat, Qdrant): the same entries, labels, paths and class names."""

from __future__ import annotations

import numpy as np
import pytest

from centrum.cli import main
from centrum.serving.store import IndexStore

NAMES = ["ant", "bee", "cat"]


@pytest.mark.parametrize("backend", [None, "torch", "faiss-flat", "qdrant"])
def test_the_service_reads_every_backend_folder(tmp_path, backend):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 4)
    vectors = (rng.normal(size=(3, 8))[labels] + 0.1 * rng.normal(size=(12, 8))).astype(np.float32)
    g = tmp_path / "g.npz"
    np.savez(g, embeddings=vectors, labels=labels, class_names=np.array(NAMES),
             paths=np.array([f"/img/{i}.png" for i in range(12)]))  # fmt: skip
    folder = tmp_path / "index"
    args = ["index", "build", "--embeddings", str(g), "--out", str(folder), "--metric", "cosine"]
    if backend is not None:
        args += ["--backend", backend]
    if backend == "qdrant":
        args += ["--qdrant-path", str(tmp_path / "qdrant")]
    assert main(args) == 0
    store = IndexStore(folder, dim=8)
    try:
        assert store.classes() == {"ant": 4, "bee": 4, "cat": 4}
        query = vectors[5] / np.linalg.norm(vectors[5])
        (hit,) = store.search_images(query[None].astype(np.float32), k=1)[0]
        assert (hit.class_name, hit.id, hit.path) == ("bee", 5, "/img/5.png")
    finally:
        store.close()
