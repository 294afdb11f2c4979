"""The Ray Data runner on a local Ray instance (2 CPUs, 2 model actors) writes the same shards, with the same
embeddings, as the single-process path, and resumes: only a removed shard is recomputed."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from PIL import Image

from centrum.inference.shards import ShardInputs, embed_all, load_manifest, seeded_small_cnn_embedder, shard_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_runner_matches_the_single_process_shards_and_resumes(tmp_path, ray_local):
    from centrum.inference.ray_runner import embed_with_ray

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    paths = []
    for i in range(30):
        path = tmp_path / "images" / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    inputs = ShardInputs.of(paths, labels=np.arange(30) // 3, cameras=np.arange(30) % 2, class_names=["a"] * 10)
    make = functools.partial(seeded_small_cnn_embedder, seed=0)
    embed_all(inputs, tmp_path / "local", 4, make(), batch_size=7)
    embed_with_ray(inputs, tmp_path / "ray", 4, make, num_workers=2, batch_size=5)
    local, remote = load_manifest(tmp_path / "local"), load_manifest(tmp_path / "ray")
    np.testing.assert_allclose(remote.embeddings, local.embeddings, atol=1e-5)
    assert remote.paths == local.paths == paths
    np.testing.assert_array_equal(remote.labels, local.labels)
    np.testing.assert_array_equal(remote.cameras, local.cameras)
    assert remote.class_names == local.class_names

    kept = {i: shard_path(tmp_path / "ray", i, 4).stat().st_mtime_ns for i in (0, 1, 3)}
    shard_path(tmp_path / "ray", 2, 4).unlink()
    embed_with_ray(inputs, tmp_path / "ray", 4, make, num_workers=2, batch_size=5)
    assert {i: shard_path(tmp_path / "ray", i, 4).stat().st_mtime_ns for i in (0, 1, 3)} == kept
    np.testing.assert_allclose(load_manifest(tmp_path / "ray").embeddings, local.embeddings, atol=1e-5)
