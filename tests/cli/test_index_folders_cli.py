"""Index folders across commands: every folder ``centrum index build`` writes (built-in, torch/faiss backend,
Qdrant) is read by ``centrum search`` and ``centrum index search`` alike; a Qdrant folder that is gone, held
by another process or damaged is one line and exit 2 (nothing created); ``index build`` never replaces an
index without ``--overwrite``, and with it replaces the folder in one step."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from centrum.cli import main
from inference.fake_checkpoint import write_checkpoint, write_class_folders

N_CLASSES, PER_CLASS, DIM = 4, 5, 8
SRC = str(pathlib.Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def npz(tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(N_CLASSES, DIM))
    labels = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    gallery = (centres[labels] + 0.3 * rng.normal(size=(len(labels), DIM))).astype(np.float32)
    names = np.array(["ant", "bee", "cat", "dog"])
    g, q = tmp_path / "g.npz", tmp_path / "q.npz"
    np.savez(g, embeddings=gallery, labels=labels, class_names=names,
             paths=np.array([f"/img/{i}.png" for i in range(len(labels))]))  # fmt: skip
    np.savez(q, query=gallery[::PER_CLASS], query_labels=labels[::PER_CLASS], class_names=names)
    return g, q


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def build_qdrant(g: pathlib.Path, out: pathlib.Path, data: pathlib.Path, *extra: str) -> int:
    return main(["index", "build", "--embeddings", str(g), "--out", str(out), "--backend", "qdrant",
                 "--qdrant-path", str(data), *extra])  # fmt: skip


# Qdrant's folder --------------------------------------------------------------------------------------------------
def test_a_qdrant_index_whose_data_folder_was_deleted_is_an_error_and_nothing_is_created(tmp_path, npz, capsys):
    pytest.importorskip("qdrant_client")
    g, q = npz
    data, out = tmp_path / "qdrant", tmp_path / "index"
    assert build_qdrant(g, out, data) == 0
    for path in sorted(data.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    data.rmdir()
    capsys.readouterr()
    assert main(["index", "search", str(out), "--queries", str(q)]) == 2
    line = one_error_line(capsys)
    assert str(data) in line and "does not exist" in line
    assert not data.exists()  # not silently re-created as an empty store
    assert "accuracy" not in capsys.readouterr().out


def test_a_qdrant_collection_that_lost_entries_is_an_error(tmp_path, npz, capsys):
    pytest.importorskip("qdrant_client")
    from qdrant_client import QdrantClient, models

    g, q = npz
    data, out = tmp_path / "qdrant", tmp_path / "index"
    assert build_qdrant(g, out, data) == 0
    client = QdrantClient(path=str(data))
    client.delete("centrum_images", points_selector=models.PointIdsList(points=[0, 1]), wait=True)
    client.close()
    capsys.readouterr()
    assert main(["index", "search", str(out), "--queries", str(q)]) == 2
    line = one_error_line(capsys)
    assert "holds 18 entries" in line and "built with 20" in line


HOLDER = """
import sys, time
from qdrant_client import QdrantClient
client = QdrantClient(path=sys.argv[1])
print("holding", flush=True)
sys.stdin.readline()
client.close()
"""


@pytest.fixture
def held_folder(tmp_path, npz):
    """A built Qdrant index whose folder a second, real process holds open."""
    pytest.importorskip("qdrant_client")
    g, _ = npz
    data, out = tmp_path / "qdrant", tmp_path / "index"
    assert build_qdrant(g, out, data) == 0
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(data)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "holding"
        yield data, out
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_qdrant_folder_held_by_another_process_is_one_line_naming_it(held_folder, npz, tmp_path, capsys):
    data, out = held_folder
    g, q = npz
    capsys.readouterr()
    assert main(["index", "search", str(out), "--queries", str(q)]) == 2  # index search
    line = one_error_line(capsys)
    assert str(data) in line and "one process at a time" in line and "Qdrant server" in line
    assert build_qdrant(g, tmp_path / "other", data) == 2  # index build into the same folder
    line = one_error_line(capsys)
    assert str(data) in line and "one process at a time" in line
    assert not (tmp_path / "other").exists()


def test_the_library_raises_a_value_error_for_a_held_folder(held_folder):
    from centrum.retrieval.backends import open_backend
    from centrum.retrieval.backends.qdrant_backend import QdrantFolderInUseError

    data, _ = held_folder
    with pytest.raises(QdrantFolderInUseError, match="in use by another process") as caught:
        open_backend("qdrant", DIM, path=str(data))
    assert isinstance(caught.value, ValueError) and caught.value.folder == data


@pytest.mark.slow  # a fresh interpreter importing centrum: ~10 s on a busy machine
def test_the_real_command_on_a_held_folder_exits_2_without_a_traceback(held_folder, npz):
    data, out = held_folder
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "centrum", "index", "search", str(out), "--queries", str(npz[1])],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert str(data) in done.stderr and "already accessed" not in done.stderr


def test_a_damaged_qdrant_meta_json_is_named_in_words(tmp_path, npz, capsys):
    pytest.importorskip("qdrant_client")
    g, q = npz
    data, out = tmp_path / "qdrant", tmp_path / "index"
    assert build_qdrant(g, out, data) == 0
    (data / "meta.json").write_text("")  # as a crash or a full disk can leave it
    capsys.readouterr()
    assert main(["index", "search", str(out), "--queries", str(q)]) == 2
    line = one_error_line(capsys)
    assert str(data / "meta.json") in line and "not valid JSON" in line and "damaged" in line
    assert (data / "meta.json").read_text() == ""  # left for the operator to restore


# one opener for every command --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_and_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    checkpoint, _ = write_checkpoint(root / "model.ckpt")
    gallery = write_class_folders(root / "gallery", {"cat": [1, 2, 3], "dog": [4, 5, 6]})
    queries = write_class_folders(root / "queries", {"cat": [7], "dog": [8]})
    npz = root / "gallery.npz"
    assert main(["embed", str(gallery), "--checkpoint", str(checkpoint), "--out", str(npz), "--device", "cpu"]) == 0
    return checkpoint, queries, npz


BUILDS = {
    "built-in": [],
    "torch backend": ["--kind", "image"],
    "faiss-flat backend": ["--backend", "faiss-flat", "--kind", "image"],
    "qdrant": ["--backend", "qdrant", "--qdrant-path", "QDRANT"],
}


def ranked_lines(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.strip()[:1].isdigit() or "accuracy" in line]


@pytest.mark.parametrize("centroids", [False, True], ids=["per-image", "centroid"])
def test_search_reads_every_index_folder_that_index_build_writes(tmp_path, model_and_images, capsys, centroids):
    checkpoint, queries, npz = model_and_images
    printed = {}
    for name, extra in BUILDS.items():
        if name == "faiss-flat backend":
            pytest.importorskip("faiss")
        if name == "qdrant":
            pytest.importorskip("qdrant_client")
        extra = [str(tmp_path / "qdrant-data") if a == "QDRANT" else a for a in extra]
        if centroids:
            extra = [a.replace("image", "centroid") for a in extra] if "--kind" in extra else [*extra, "--centroids"]
        out = tmp_path / name.replace(" ", "-")
        assert main(["index", "build", "--embeddings", str(npz), "--out", str(out), *extra]) == 0
        capsys.readouterr()
        code = main(["search", str(queries), "--checkpoint", str(checkpoint), "--index", str(out), "-k", "4"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        printed[name] = ranked_lines(captured.out)
    reference = printed.pop("built-in")
    assert len([line for line in reference if "accuracy" not in line]) == 2 * (2 if centroids else 4)
    for name, lines in printed.items():
        assert lines == reference, name  # same ranked list, distances and class names on every backend


def test_a_folder_without_an_index_is_named_with_what_it_lacks(tmp_path, model_and_images, capsys):
    checkpoint, queries, _ = model_and_images
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert main(["search", str(queries), "--checkpoint", str(checkpoint), "--index", str(tmp_path / "empty")]) == 2
    line = one_error_line(capsys)
    assert "no index at" in line and "index.npz" in line and "centrum_index.json" in line


# --overwrite --------------------------------------------------------------------------------------------------------
def test_index_build_refuses_to_replace_an_index_without_overwrite(tmp_path, npz, capsys):
    g, _ = npz
    out = tmp_path / "index"
    assert main(["index", "build", "--embeddings", str(g), "--out", str(out)]) == 0
    before = (out / "index.npz").read_bytes()
    capsys.readouterr()
    for extra in ([], ["--centroids"], ["--backend", "faiss-flat", "--kind", "image"]):
        assert main(["index", "build", "--embeddings", str(g), "--out", str(out), *extra]) == 2
        line = one_error_line(capsys)
        assert str(out) in line and "--overwrite" in line
    assert (out / "index.npz").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["index.npz"]


def test_overwrite_replaces_the_folder_whole_and_leaves_nothing_behind(tmp_path, npz, capsys):
    from centrum.retrieval import load_index

    g, _ = npz
    out = tmp_path / "index"
    assert main(["index", "build", "--embeddings", str(g), "--out", str(out), "--backend", "faiss-flat",
                 "--kind", "image"]) == 0  # fmt: skip
    assert main(["index", "build", "--embeddings", str(g), "--out", str(out), "--centroids", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["index.npz"]  # the backend's files went with the old index
    assert load_index(out).kind == "centroid"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npz", "index", "q.npz"]  # no staging folder left


def test_a_failed_overwrite_keeps_the_old_index(tmp_path, npz, capsys):
    g, _ = npz
    out = tmp_path / "index"
    assert main(["index", "build", "--embeddings", str(g), "--out", str(out)]) == 0
    before = (out / "index.npz").read_bytes()
    unlabelled = tmp_path / "u.npz"
    np.savez(unlabelled, embeddings=np.ones((3, DIM), np.float32), labels=np.array([-1, 0, 1]))
    capsys.readouterr()
    assert main(["index", "build", "--embeddings", str(unlabelled), "--out", str(out), "--centroids",
                 "--overwrite"]) == 2  # fmt: skip
    assert "label -1" in one_error_line(capsys)
    assert (out / "index.npz").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npz", "index", "q.npz", "u.npz"]


def test_overwrite_never_deletes_a_folder_that_is_not_an_index(tmp_path, npz, capsys):
    g, _ = npz
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    capsys.readouterr()
    assert main(["index", "build", "--embeddings", str(g), "--out", str(out), "--overwrite"]) == 2
    assert "not an index" in one_error_line(capsys)
    assert (out / "holiday.jpg").read_bytes() == b"precious"


def test_qdrant_overwrite_refills_the_collection_once(tmp_path, npz, capsys):
    pytest.importorskip("qdrant_client")
    g, q = npz
    data, out = tmp_path / "qdrant", tmp_path / "index"
    assert build_qdrant(g, out, data) == 0
    capsys.readouterr()
    assert build_qdrant(g, out, data) == 2
    assert "--overwrite" in one_error_line(capsys)
    assert build_qdrant(g, tmp_path / "second", data) == 2  # a new --out, but the collection is full
    assert "already holds 20 entries" in one_error_line(capsys)
    assert build_qdrant(g, out, data, "--overwrite") == 0
    assert json.loads((out / "centrum_index.json").read_text())["size"] == 20
    res = tmp_path / "r.json"
    assert main(["index", "search", str(out), "--queries", str(q), "-k", "20", "--json", str(res)]) == 0
    assert all(len(ids) == 20 and len(set(ids)) == 20 for ids in json.loads(res.read_text())["indices"])


def test_qdrant_path_inside_out_is_refused(tmp_path, npz, capsys):
    g, _ = npz
    capsys.readouterr()
    assert build_qdrant(g, tmp_path / "index", tmp_path / "index" / "qdrant") == 2
    assert "must not be inside --out" in one_error_line(capsys)
    assert not (tmp_path / "index").exists()


@pytest.mark.parametrize("backend", ["torch", "faiss-flat", "qdrant"])
def test_a_backend_index_gives_back_its_entries_for_a_service_to_take_over(tmp_path, npz, backend):
    pytest.importorskip("faiss" if backend.startswith("faiss") else "qdrant_client" if backend == "qdrant" else "numpy")
    from centrum.retrieval import load_index

    g, _ = npz
    out, extra = tmp_path / "index", ["--kind", "image"]
    if backend == "qdrant":
        extra = ["--qdrant-path", str(tmp_path / "qdrant-data")]
    assert main(["index", "build", "--embeddings", str(g), "--out", str(out), "--backend", backend, *extra]) == 0
    index = load_index(out)
    try:
        vectors, labels, paths = index.entries()
    finally:
        index.close()
    with np.load(g) as data:
        expected = data["embeddings"] / np.linalg.norm(data["embeddings"], axis=1, keepdims=True)  # cosine: unit rows
        np.testing.assert_allclose(vectors, expected, atol=1e-5)
        assert labels.tolist() == data["labels"].tolist() and paths == data["paths"].tolist()
