"""Durability: an acknowledged enrolment survives ``kill -9``; journal replay, torn lines and crashed snapshots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from live_server import SRC, free_port, png_bytes, start_server

from centrum.serving.store import JOURNAL_FILE, SNAPSHOT_FILE, IndexStore, NotFoundError


def test_enrolment_survives_kill_9_and_restart(tmp_path, model_files, drawings):
    images, _ = drawings
    index = tmp_path / "idx"
    model = ["--onnx", str(model_files["onnx"])]  # starts faster than a checkpoint (no Lightning import)
    # --compact-every 3: the second kill lands after a compaction, with records both in the snapshot and the journal
    extra = ["--api-key-file", str(model_files["keys"]), "--compact-every", "3"]
    server = start_server(index, model, extra)
    try:
        with server.client(headers=server.auth()) as client:
            first = client.post("/classes/keep/images", files=[("image", ("a.png", png_bytes(images[0]), "image/png"))])
            assert first.status_code == 201
        # a second service on the same folder stops at start, in one line, naming the folder and the holder
        second = [sys.executable, "-m", "centrum", "serve", "--index", str(index), *model, "--port", str(free_port())]
        done = subprocess.run(
            [*second, "--host", "127.0.0.1", *extra],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(SRC)},
        )
        assert done.returncode == 2, done.stderr
        message = done.stderr.strip().splitlines()
        assert len(message) == 1 and f"index folder {index} is in use by another service" in message[0]
        assert f"(pid {server.process.pid})" in message[0]
        server.stop(signal.SIGKILL)  # right after the answer: no shutdown hook runs; the kernel drops its lock
        assert server.process.returncode == -signal.SIGKILL
        server = start_server(index, model, extra)
        with server.client(headers=server.auth()) as client:
            assert client.get("/classes").json()["classes"] == [{"name": "keep", "count": 1}]
            hit = client.post("/search", files=[("image", ("q.png", png_bytes(images[0]), "image/png"))]).json()
            assert hit["results"][0]["hits"][0]["id"] == first.json()["ids"][0]
            assert client.get(f"/images/{first.json()['ids'][0]}").status_code == 200  # the stored upload too
            acked = []
            for i in range(1, 6):
                r = client.post(
                    f"/classes/c{i % 2}/images", files=[("image", ("x.png", png_bytes(images[i]), "image/png"))]
                )
                acked += r.json()["ids"]
            assert client.delete(f"/images/{acked[0]}").status_code == 200
        server.stop(signal.SIGKILL)
        assert (index / SNAPSHOT_FILE).is_file()
        server = start_server(index, model, extra)
        with server.client() as client:
            counts = {c["name"]: c["count"] for c in client.get("/classes").json()["classes"]}
            assert counts == {"keep": 1, "c0": 2, "c1": 2}
            assert client.get(f"/images/{acked[0]}").status_code == 404
            assert all(client.get(f"/images/{i}").status_code == 200 for i in acked[1:])
        server.stop()  # SIGTERM: a clean shutdown compacts the journal into the snapshot
        # uvicorn shuts down gracefully, then re-raises the signal: exit status -SIGTERM
        assert server.process.returncode in (0, -signal.SIGTERM)
        assert (index / JOURNAL_FILE).stat().st_size == 0
        assert IndexStore(index, dim=128).classes() == {"keep": 1, "c0": 2, "c1": 2}
    finally:
        server.stop()


def _vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def test_journal_replay_drops_a_torn_last_line(tmp_path):
    store = IndexStore(tmp_path, dim=8)
    ids = store.enrol("a", _vectors(3), paths=["p0", "p1", "p2"])
    store.enrol("b", _vectors(2, seed=1))
    # a crash mid-append leaves half a record, which was never acknowledged
    with open(tmp_path / JOURNAL_FILE, "ab") as journal:
        journal.write(b'{"seq": 3, "op": "enrol", "class": "c", "ids": [5]')
    reopened = IndexStore(tmp_path, dim=8)
    assert reopened.classes() == {"a": 3, "b": 2}
    assert reopened.image_path(ids[1]).name == "p1"
    # the torn tail is cut off, so the next record appends cleanly and replays
    reopened.enrol("c", _vectors(1, seed=2))
    assert IndexStore(tmp_path, dim=8).classes() == {"a": 3, "b": 2, "c": 1}


def test_crash_mid_snapshot_keeps_the_previous_snapshot(tmp_path):
    store = IndexStore(tmp_path, dim=8, compact_every=2)
    store.enrol("a", _vectors(2))
    store.enrol("b", _vectors(1, seed=1))  # compaction: snapshot written, journal emptied
    assert (tmp_path / SNAPSHOT_FILE).is_file() and (tmp_path / JOURNAL_FILE).stat().st_size == 0
    store.enrol("a", _vectors(1, seed=2))
    # a writer killed mid-snapshot leaves only its temporary file; the snapshot itself is untouched
    (tmp_path / f".{SNAPSHOT_FILE}.12345.tmp").write_bytes(b"half a zip")
    reopened = IndexStore(tmp_path, dim=8)
    assert reopened.classes() == {"a": 3, "b": 1}
    # a crash after the snapshot but before the journal was emptied: records are not applied twice
    journal = (tmp_path / JOURNAL_FILE).read_bytes()
    reopened.compact()
    (tmp_path / JOURNAL_FILE).write_bytes(journal)
    assert IndexStore(tmp_path, dim=8).classes() == {"a": 3, "b": 1}


def test_store_centroids_deletes_and_dimension_check(tmp_path):
    store = IndexStore(tmp_path, dim=8)
    x = _vectors(4)
    ids = store.enrol("a", x[:3])
    store.enrol("b", x[3:])
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    query = unit[:1]
    hit = store.search_classes(query, 1)[0][0]
    centroid = unit[:3].mean(0)
    assert hit.class_name == "a" and hit.count == 3
    assert hit.distance == pytest.approx(1 - float(query[0] @ centroid / np.linalg.norm(centroid)), abs=1e-5)
    store.delete_image(ids[0])  # the centroid is recomputed from the two left
    centroid = unit[1:3].mean(0)
    hit = next(h for h in store.search_classes(query, 2)[0] if h.class_name == "a")
    assert hit.distance == pytest.approx(1 - float(query[0] @ centroid / np.linalg.norm(centroid)), abs=1e-5)
    assert sorted(h.id for h in store.search_images(query, 5)[0]) == [ids[1], ids[2], ids[2] + 1]
    with pytest.raises(NotFoundError):
        store.delete_class("zzz")
    store.close()
    with pytest.raises(ValueError, match="holds 8-d embeddings but the model gives 16-d"):
        IndexStore(tmp_path, dim=16)
    header = json.loads(np.load(tmp_path / SNAPSHOT_FILE)["header"].tobytes())
    assert header["classes"] == {"a": 0, "b": 1}


def test_a_built_index_folder_is_imported(tmp_path):
    """A folder written by ``centrum index build`` serves as is: labels become class names, rows ids, paths kept."""
    from centrum.retrieval import EmbeddingIndex

    built = EmbeddingIndex(8)
    built.add(_vectors(5), [3, 3, 7, 7, 7], [f"/data/img{i}.jpg" for i in range(5)])
    built.save(tmp_path)
    store = IndexStore(tmp_path, dim=8)
    assert store.classes() == {"3": 2, "7": 3}
    assert str(store.image_path(4)) == "/data/img4.jpg"
    hit = store.search_images(_vectors(5)[2:3], 1)[0][0]
    assert (hit.id, hit.class_name, hit.path) == (2, "7", "/data/img2.jpg")
    store.enrol("new", _vectors(1, seed=9))
    store.close()
    assert IndexStore(tmp_path, dim=8).classes() == {"3": 2, "7": 3, "new": 1}
