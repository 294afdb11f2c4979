"""The CLI carries class names from folders through embed -> index -> search, writes its outputs atomically
with normal permissions, draws unlabelled queries and missing images sensibly, and documents itself."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from centrum.cli import main
from inference.fake_checkpoint import write_checkpoint, write_class_folders


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path, _ = write_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt")
    return path


def _embed(checkpoint, folder, out) -> None:
    assert main(["embed", str(folder), "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu"]) == 0


def test_the_class_name_is_the_identity_across_two_embed_calls(checkpoint, tmp_path, capsys):
    # the gallery has cat and dog, the queries only dog: dog is label 1 in one file and 0 in the other
    gallery = write_class_folders(tmp_path / "gallery", {"cat": [1, 2], "dog": [3, 4]})
    queries = write_class_folders(tmp_path / "queries", {"dog": [3, 4]})  # the same images as the gallery's dogs
    _embed(checkpoint, gallery, tmp_path / "g.npz")
    _embed(checkpoint, queries, tmp_path / "q.npz")
    with np.load(tmp_path / "q.npz") as q:
        assert q["labels"].tolist() == [0, 0] and q["class_names"].tolist() == ["dog"]
    assert main(["index", "build", "--embeddings", str(tmp_path / "g.npz"), "--out", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    res = tmp_path / "res.json"
    assert main(["index", "search", str(tmp_path / "idx"), "--queries", str(tmp_path / "q.npz"), "-k", "2",
                 "--json", str(res)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "top-1 label accuracy: 100.00 %" in printed  # each dog finds itself (was 0 % when matched by number)
    assert "query 0 (class dog): dog:0.0000" in printed
    result = json.loads(res.read_text())
    assert [row[0] for row in result["classes"]] == ["dog", "dog"]
    # the image search names classes too, and matches the query folder's class by name
    assert main(["search", str(queries), "--checkpoint", str(checkpoint), "--index", str(tmp_path / "idx"),
                 "-k", "1", "--device", "cpu"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "(class dog)" in printed and "top-1 class accuracy: 100.00 %" in printed


def test_unlabelled_queries_get_no_accuracy_and_k_beyond_the_index_is_not_padded(checkpoint, tmp_path, capsys):
    gallery = write_class_folders(tmp_path / "gallery", {"cat": [1, 2], "dog": [3]})
    _embed(checkpoint, gallery, tmp_path / "g.npz")
    loose = tmp_path / "loose"
    loose.mkdir()
    for seed in (7, 8):
        (loose / f"{seed}.png").write_bytes((gallery / "cat" / "1.png").read_bytes())
    _embed(checkpoint, loose, tmp_path / "q.npz")
    for centroids in ([], ["--centroids"]):
        idx = tmp_path / f"idx{len(centroids)}"
        assert main(["index", "build", "--embeddings", str(tmp_path / "g.npz"), "--out", str(idx), *centroids]) == 0
        capsys.readouterr()
        res = tmp_path / "r.json"
        assert main(["index", "search", str(idx), "--queries", str(tmp_path / "q.npz"), "-k", "50",
                     "--json", str(res)]) == 0  # fmt: skip
        printed = capsys.readouterr().out
        assert "accuracy" not in printed
        text = res.read_text()
        assert "Infinity" not in text and "NaN" not in text
        result = json.loads(text)
        entries = 2 if centroids else 3
        assert [len(row) for row in result["indices"]] == [entries, entries]
        assert min(min(row) for row in result["indices"]) >= 0
        assert set(result["classes"][0]) <= {"cat", "dog"}
    capsys.readouterr()
    assert main(["search", str(loose), "--checkpoint", str(checkpoint), "--index", str(tmp_path / "idx0"),
                 "-k", "9", "--device", "cpu"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "accuracy" not in printed and "    4." not in printed  # 3 entries, no padding rows


def test_centroid_index_with_picture_fails_before_printing(checkpoint, tmp_path, capsys):
    gallery = write_class_folders(tmp_path / "gallery", {"cat": [1], "dog": [2]})
    _embed(checkpoint, gallery, tmp_path / "g.npz")
    assert main(["index", "build", "--embeddings", str(tmp_path / "g.npz"), "--out", str(tmp_path / "c"),
                 "--centroids"]) == 0  # fmt: skip
    capsys.readouterr()
    args = ["search", str(gallery), "--checkpoint", str(checkpoint), "--index", str(tmp_path / "c"),
            "--picture", str(tmp_path / "p.png"), "--device", "cpu"]  # fmt: skip
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "centroid index" in captured.err and len(captured.err.splitlines()) == 1
    assert not (tmp_path / "p.png").exists()


def test_paths_resolve_from_any_folder_and_a_missing_image_is_a_placeholder(checkpoint, tmp_path, capsys):
    gallery = write_class_folders(tmp_path / "gallery", {"cat": [1, 2], "dog": [3]})
    old = os.getcwd()
    try:
        os.chdir(tmp_path)  # relative paths on the command line
        _embed(checkpoint, "gallery", "g.npz")
        assert main(["index", "build", "--embeddings", "g.npz", "--out", "idx"]) == 0
    finally:
        os.chdir(old)
    (gallery / "dog" / "3.png").unlink()  # an indexed image that has gone since
    picture = tmp_path / "out" / "ranked.png"
    capsys.readouterr()
    assert main(["search", str(gallery / "cat"), "--checkpoint", str(checkpoint), "--index", str(tmp_path / "idx"),
                 "-k", "3", "--picture", str(picture), "--device", "cpu"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    listed = [line.split()[2] for line in printed.splitlines() if line.strip()[:2] in ("1.", "2.", "3.")]
    assert listed and all(os.path.isabs(p) for p in listed)
    assert str(gallery / "dog" / "3.png") in listed  # still listed, drawn as a placeholder
    assert picture.stat().st_size > 1000


def test_outputs_replace_atomically_with_normal_permissions(checkpoint, tmp_path, monkeypatch):
    gallery = write_class_folders(tmp_path / "gallery", {"cat": [1]})
    out = tmp_path / "g.npz"
    _embed(checkpoint, gallery, out)
    before = out.read_bytes()
    mode = stat.S_IMODE(out.stat().st_mode)
    assert mode == 0o666 & ~_umask()  # not the 0600 of a bare temporary file

    def full_disk(fd):  # the new bytes are in the temporary file; making them durable fails
        raise OSError(28, "No space left on device")

    import centrum.io

    monkeypatch.setattr(centrum.io.os, "fsync", full_disk)
    assert main(["embed", str(gallery), "--checkpoint", str(checkpoint), "--out", str(out), "--flip"]) == 2
    assert out.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npz", "gallery"]  # no temporary file left


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(
    "command",
    [["embed"], ["evaluate"], ["index", "build"], ["index", "search"], ["search"], ["study"], ["export"], ["serve"]],
)
def test_help_shows_an_example_and_the_defaults(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "example" in text and "centrum " in text.split("example", 1)[1]
    assert "(default: " in text


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("centrum ")
