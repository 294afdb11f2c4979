"""Sharded embedding: the split is deterministic and covers the input once, shards are skipped when done and
redone when damaged, the manifest loads back in input order, and a real model gives the same embeddings
sharded as in one pass."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from centrum.inference.shards import (
    ShardInputs,
    embed_all,
    embed_shard,
    load_manifest,
    parse_shard,
    seeded_small_cnn_embedder,
    shard_path,
    shard_rows,
    write_manifest,
)
from centrum.retrieval.backends import open_backend


class CountingEmbedder:
    """A deterministic embedding of the path's text (SHA-256 bytes), counting the images it embeds."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, paths: list[str]) -> np.ndarray:
        self.seen.extend(paths)
        return np.stack([np.frombuffer(hashlib.sha256(p.encode()).digest(), np.uint8)[:8] for p in paths]).astype(
            np.float32
        )


def make_inputs(n: int = 23) -> ShardInputs:
    return ShardInputs.of(
        [f"images/{i:03d}.png" for i in range(n)],
        labels=np.arange(n) // 3,
        cameras=np.arange(n) % 2,
        class_names=[f"class-{c}" for c in range(8)],
    )


@pytest.mark.parametrize(("n", "count"), [(23, 4), (5, 5), (3, 7), (0, 2), (100, 1)])
def test_shards_cover_the_input_once_with_sizes_differing_by_at_most_one(n, count):
    parts = [shard_rows(n, i, count) for i in range(count)]
    assert [r for part in parts for r in part] == list(range(n))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert parts == [shard_rows(n, i, count) for i in range(count)]  # deterministic


def test_parse_shard_accepts_i_of_n_and_names_a_bad_value():
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "-1/3", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match=r"I/N|out of range"):
            parse_shard(bad)


def test_embed_all_then_load_manifest_gives_every_row_in_input_order(tmp_path):
    inputs = make_inputs()
    embed = CountingEmbedder()
    manifest = embed_all(inputs, tmp_path, 4, embed, batch_size=2)
    data = json.loads(manifest.read_text())
    assert data["complete"] and data["size"] == 23 and [s["start"] for s in data["shards"]] == [0, 5, 11, 17]
    loaded = load_manifest(tmp_path)
    np.testing.assert_array_equal(loaded.embeddings, CountingEmbedder()(inputs.paths))
    assert loaded.paths == inputs.paths
    np.testing.assert_array_equal(loaded.labels, inputs.labels)
    np.testing.assert_array_equal(loaded.cameras, inputs.cameras)
    assert loaded.class_names == inputs.class_names
    assert sorted(embed.seen) == sorted(inputs.paths)  # each image embedded exactly once


def test_finished_shards_are_skipped_and_damaged_ones_redone(tmp_path):
    inputs = make_inputs()
    first = CountingEmbedder()
    assert embed_shard(inputs, tmp_path, 0, 4, first)[1] is True
    assert embed_shard(inputs, tmp_path, 2, 4, first)[1] is True
    assert embed_shard(inputs, tmp_path, 2, 4, first)[1] is False
    assert not json.loads(write_manifest(inputs, tmp_path, 4).read_text())["complete"]
    with pytest.raises(ValueError, match=r"2 shard\(s\) missing"):
        load_manifest(tmp_path)
    done_bytes = shard_path(tmp_path, 0, 4).read_bytes()
    rest = CountingEmbedder()
    embed_all(inputs, tmp_path, 4, rest)
    assert rest.seen == inputs.paths[5:11] + inputs.paths[17:]  # only shards 1 and 3
    assert shard_path(tmp_path, 0, 4).read_bytes() == done_bytes
    # a shard cut short (e.g. by a crash of another tool) and a writer's leftover temporary file
    damaged = shard_path(tmp_path, 1, 4)
    damaged.write_bytes(damaged.read_bytes()[:100])
    (tmp_path / f".{damaged.name}.123.tmp").write_bytes(b"partial")
    again = CountingEmbedder()
    embed_all(inputs, tmp_path, 4, again)
    assert again.seen == inputs.paths[5:11]
    np.testing.assert_array_equal(load_manifest(tmp_path).embeddings, CountingEmbedder()(inputs.paths))


def test_shards_of_another_input_list_are_refused(tmp_path):
    embed_all(make_inputs(), tmp_path, 2, CountingEmbedder())
    with pytest.raises(ValueError, match="different input list"):
        embed_all(make_inputs(22), tmp_path, 2, CountingEmbedder())
    with pytest.raises(ValueError, match="labels has 2 entries but there are 3 paths"):
        ShardInputs.of(["a", "b", "c"], labels=[1, 2])
    with pytest.raises(FileNotFoundError, match="no shard manifest"):
        load_manifest(tmp_path / "nowhere")


def write_images(folder, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_a_real_model_gives_the_same_embeddings_sharded_and_in_one_pass(tmp_path):
    paths = write_images(tmp_path / "images", 12)
    inputs = ShardInputs.of(paths, labels=np.arange(12) // 2)
    whole = seeded_small_cnn_embedder(seed=0)(paths)
    embed_all(inputs, tmp_path / "shards", 3, seeded_small_cnn_embedder(seed=0), batch_size=4)
    loaded = load_manifest(tmp_path / "shards" / "manifest.json")
    np.testing.assert_allclose(loaded.embeddings, whole, atol=1e-5)
    index = open_backend("torch", loaded.embeddings.shape[1])  # an index built from the manifest
    index.add(loaded.embeddings, loaded.labels, paths=loaded.paths)
    hits = index.search(whole, 1)
    assert hits.paths[:, 0].tolist() == paths
