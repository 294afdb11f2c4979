"""The service on Qdrant: an IndexStore whose searches go through the backend interface (Qdrant local mode)
answers exactly as the built-in store after enrolments and deletions and after a restart (the collections are
refilled from the folder's snapshot and journal), and ``centrum serve --backend qdrant`` serves a real HTTP
client."""

from __future__ import annotations

import numpy as np
import pytest
from live_server import png_bytes, start_server

from centrum.serving.store import IndexStore

pytest.importorskip("qdrant_client")


def qdrant_engines(folder, dim=8):
    from centrum.retrieval.backends import open_backend
    from centrum.retrieval.backends.qdrant_backend import qdrant_client

    client = qdrant_client(path=str(folder))
    for name in ("t_images", "t_centroids"):
        if client.collection_exists(name):
            client.delete_collection(name)
    return (
        open_backend("qdrant", dim, kind="image", path=str(folder), collection="t_images"),
        open_backend("qdrant", dim, kind="centroid", path=str(folder), collection="t_centroids"),
    )


def answers(store: IndexStore, queries: np.ndarray):
    """The per-image and per-class answers without distances, the distances, and the class table."""
    images = store.search_images(queries, 5)
    classes = store.search_classes(queries, 3)
    keys = (
        [[(h.id, h.class_name, h.path) for h in hits] for hits in images],
        [[(h.class_name, h.count) for h in hits] for hits in classes],
        store.classes(),
    )
    distances = [h.distance for hits in images for h in hits] + [h.distance for hits in classes for h in hits]
    return keys, np.array(distances)


def same_answers(got, expected) -> None:
    assert got[0] == expected[0]
    np.testing.assert_allclose(got[1], expected[1], atol=1e-5)


def fill(store: IndexStore, rng: np.random.Generator) -> None:
    for name in ("a", "b", "c", "d"):
        store.enrol(name, rng.normal(size=(3, 8)).astype(np.float32), paths=[f"/x/{name}{i}.png" for i in range(3)])
    store.delete_image(4)  # one image of b: b's centroid recomputed
    store.delete_class("c")


def test_the_store_on_qdrant_answers_as_the_builtin_store_and_after_a_restart(tmp_path):
    queries = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
    plain = IndexStore(tmp_path / "plain", dim=8)
    on_qdrant = IndexStore(tmp_path / "q", dim=8, engines=qdrant_engines(tmp_path / "qdrant"))
    fill(plain, np.random.default_rng(0))
    fill(on_qdrant, np.random.default_rng(0))
    expected = answers(plain, queries)
    assert expected[0][2] == {"a": 3, "b": 2, "d": 3}
    same_answers(answers(on_qdrant, queries), expected)
    assert len(on_qdrant._engine) == 8 and len(on_qdrant._centroid_engine) == 3  # the engines hold the entries
    on_qdrant.close()
    reopened = IndexStore(tmp_path / "q", dim=8, engines=qdrant_engines(tmp_path / "qdrant"))
    same_answers(answers(reopened, queries), expected)
    reopened.close()
    plain.close()


def test_a_non_empty_engine_is_refused(tmp_path):
    engines = qdrant_engines(tmp_path / "qdrant")
    engines[0].add(np.ones((1, 8), np.float32), [0])
    with pytest.raises(ValueError, match="must be empty"):
        IndexStore(tmp_path / "s", dim=8, engines=engines)
    engines[0].close()


def test_centrum_serve_on_qdrant_serves_search_and_enrolment(tmp_path, model_files, drawings):
    images, _ = drawings
    extra = ["--no-auth", "--backend", "qdrant", "--qdrant-path", str(tmp_path / "qdrant")]
    server = start_server(tmp_path / "idx", ["--onnx", str(model_files["onnx"])], extra)
    try:
        with server.client() as client:
            ids = []
            for i, name in enumerate(["x", "x", "y", "z"]):
                r = client.post(
                    f"/classes/{name}/images", files=[("image", ("a.png", png_bytes(images[i]), "image/png"))]
                )
                assert r.status_code == 201
                ids += r.json()["ids"]
            assert client.delete(f"/images/{ids[1]}").status_code == 200
            hit = client.post("/search", files=[("image", ("q.png", png_bytes(images[2]), "image/png"))]).json()
            assert hit["results"][0]["hits"][0]["id"] == ids[2]
            assert {c["name"]: c["count"] for c in client.get("/classes").json()["classes"]} == {"x": 1, "y": 1, "z": 1}
    finally:
        server.stop()
    server = start_server(tmp_path / "idx", ["--onnx", str(model_files["onnx"])], extra)  # refilled at restart
    try:
        with server.client() as client:
            hit = client.post("/search", files=[("image", ("q.png", png_bytes(images[3]), "image/png"))]).json()
            assert hit["results"][0]["hits"][0]["id"] == ids[3]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--backend", "qdrant"], "exactly one of --qdrant-path DIR (local) or --qdrant-url URL"),
        (["--qdrant-path", "somewhere"], "need --backend qdrant"),
        (["--backend", "qdrant", "--qdrant-url", "http://127.0.0.1:9"], "qdrant at http://127.0.0.1:9"),
    ],
)
def test_bad_qdrant_flags_stop_serve_with_one_line_before_a_port_opens(tmp_path, model_files, extra, needle):
    import subprocess
    import sys

    command = [sys.executable, "-m", "centrum", "serve", "--index", str(tmp_path / "idx"), "--onnx",
               str(model_files["onnx"]), "--no-auth", "--port", "9", *extra]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("centrum serve: error:")]
    assert len(lines) == 1 and needle in lines[0]
