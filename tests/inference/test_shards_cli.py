"""``centrum embed --shard I/N --out DIR`` with a real checkpoint: shard 0/2 + shard 1/2 give the one-pass
embeddings row for row, a finished shard is skipped (file untouched, model not loaded), the manifest indexes,
and ``--ray`` without Ray installed is a one-line error (exit 2)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from centrum.cli import main
from centrum.inference.shards import load_manifest, shard_path

from .fake_checkpoint import write_checkpoint, write_class_folders


@pytest.fixture
def photos(tmp_path):
    root = write_class_folders(tmp_path / "photos", {"cat": [1, 2, 3], "dog": [4, 5], "eel": [6, 7, 8, 9]})
    checkpoint, _ = write_checkpoint(tmp_path / "model.ckpt")
    return root, checkpoint


def test_two_shards_equal_the_one_pass_embeddings_and_a_done_shard_is_skipped(tmp_path, photos, capsys):
    root, ckpt = photos
    common = ["embed", str(root), "--checkpoint", str(ckpt), "--device", "cpu", "--batch-size", "2"]
    assert main([*common, "--out", str(tmp_path / "all.npz")]) == 0
    one_pass = np.load(tmp_path / "all.npz")
    shards = tmp_path / "shards"
    assert main([*common, "--shard", "1/2", "--out", str(shards)]) == 0  # any order
    with pytest.raises(ValueError, match="1 shard"):  # the manifest is not complete yet
        load_manifest(shards)
    assert main([*common, "--shard", "0/2", "--out", str(shards)]) == 0
    merged = load_manifest(shards)
    np.testing.assert_allclose(merged.embeddings, one_pass["embeddings"], atol=1e-6)
    assert merged.paths == [str(p) for p in one_pass["paths"]]
    np.testing.assert_array_equal(merged.labels, one_pass["labels"])
    assert merged.class_names == ["cat", "dog", "eel"]

    stamp = shard_path(shards, 0, 2).stat().st_mtime_ns
    capsys.readouterr()
    assert main([*common, "--checkpoint", str(tmp_path / "model.ckpt"), "--shard", "0/2", "--out", str(shards)]) == 0
    assert "already done, skipped" in capsys.readouterr().out
    assert shard_path(shards, 0, 2).stat().st_mtime_ns == stamp

    shard_path(shards, 1, 2).write_bytes(b"half-written")  # a damaged shard is redone
    assert main([*common, "--shard", "1/2", "--out", str(shards)]) == 0
    np.testing.assert_allclose(load_manifest(shards).embeddings, one_pass["embeddings"], atol=1e-6)

    assert (
        main(["index", "build", "--manifest", str(shards), "--out", str(tmp_path / "idx"), "--kind", "centroid"]) == 0
    )


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--shard", "2/2", "--out", "S"], "shard 2/2 is out of range"),
        (["--shard", "half", "--out", "S"], "shard must be I/N"),
        (["--shard", "0/2", "--out", "x.npz"], "must be a folder"),
        (["--shard", "0/2", "--ray", "--out", "S"], "--shard and --ray do not go together"),
        (["--shard", "0/2", "--on-error", "skip", "--out", "S"], "--on-error skip is not available"),
    ],
)
def test_bad_shard_options_exit_2_with_one_line(tmp_path, photos, capsys, extra, needle):
    root, ckpt = photos
    extra = [str(tmp_path / "S") if e == "S" else e for e in extra]
    assert main(["embed", str(root), "--checkpoint", str(ckpt), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_ray_without_ray_installed_is_a_one_line_error(tmp_path, photos, capsys, monkeypatch):
    root, ckpt = photos
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as when it is not installed
    assert main(["embed", str(root), "--checkpoint", str(ckpt), "--ray", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install "ray[data]"' in err
    assert not (tmp_path / "s" / "manifest.json").exists()


@pytest.mark.slow
def test_ray_through_the_cli_gives_the_one_pass_embeddings(tmp_path, photos):
    ray = pytest.importorskip("ray", reason="the Ray runner is an optional extra: pip install 'ray[data]'")
    pytest.importorskip("ray.data", reason="the Ray runner needs Ray Data: pip install 'ray[data]'")
    root, ckpt = photos
    common = ["embed", str(root), "--checkpoint", str(ckpt), "--device", "cpu", "--batch-size", "3"]
    assert main([*common, "--out", str(tmp_path / "all.npz")]) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main([*common, "--ray", "--workers", "2", "--shards", "3", "--out", str(tmp_path / "r")]) == 0
    finally:
        ray.shutdown()
    np.testing.assert_allclose(
        load_manifest(tmp_path / "r").embeddings, np.load(tmp_path / "all.npz")["embeddings"], atol=1e-5
    )
