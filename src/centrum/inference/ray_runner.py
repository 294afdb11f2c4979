"""Embedding on Ray Data (optional extra: ``pip install "ray[data]"``): a pool of model actors, the same shards.

:func:`embed_with_ray` streams the rows of the unfinished shards through ``Dataset.map_batches`` with a pool
of ``num_workers`` actors; each actor builds its model once, by calling ``make_embedder()`` (a picklable
callable returning ``embed_batch(list[path]) -> N x D``: e.g. ``functools.partial(seeded_small_cnn_embedder,
seed=0)`` or a function loading a checkpoint). The driver collects the embeddings by row and writes each
shard with :func:`centrum.inference.shards.write_shard` as soon as all its rows are back, then the manifest:
the files are those of the single-process path (:func:`~centrum.inference.shards.embed_all`), and a run
interrupted after some shards resumes with the rest.

On one machine Ray starts locally (``ray.init(num_cpus=...)`` before calling, or let this call start it); on a
cluster pass ``address="auto"`` on a node of it, or ``ray://head:10001`` from outside (``ray start --head`` on
the head node, ``ray start --address=head:6379`` on the others). Image paths must be readable by every worker
(a shared file system or object store mount).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable

import numpy as np

from centrum.inference.shards import EmbedBatch, ShardInputs, pending_shards, shard_rows, write_manifest, write_shard


def import_ray():
    """The ray module with Ray Data, or a ``ValueError`` saying how to install it."""
    try:
        import ray
        import ray.data  # Ray Data is a separate extra of ray
    except ImportError as exc:
        raise ValueError('the Ray runner needs Ray Data: pip install "ray[data]"') from exc
    return ray


class EmbedActor:
    """A Ray Data actor: builds its embedder once, then embeds each batch of paths (rows kept alongside)."""

    def __init__(self, make_embedder: Callable[[], EmbedBatch], torch_threads: int = 1) -> None:
        import torch

        torch.set_num_threads(torch_threads)  # one actor per CPU: no oversubscription inside an actor
        self.embed_batch = make_embedder()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        embeddings = np.asarray(self.embed_batch([str(p) for p in batch["path"]]), dtype=np.float32)
        return {"row": batch["row"], "embedding": embeddings}


def embed_with_ray(
    inputs: ShardInputs,
    out_dir: str | os.PathLike,
    count: int,
    make_embedder: Callable[[], EmbedBatch],
    *,
    num_workers: int = 2,
    batch_size: int = 64,
    address: str | None = None,
    cpus_per_worker: float = 1.0,
    torch_threads: int = 1,
) -> pathlib.Path:
    """Embed every unfinished shard of ``count`` with a Ray Data pool of ``num_workers`` model actors and
    write the shards and manifest into ``out_dir``; return the manifest's path. Ray is started (at
    ``address``, or locally) unless it already runs in this process."""
    if num_workers < 1 or batch_size < 1:
        raise ValueError(f"num_workers and batch_size must be positive, got {num_workers} and {batch_size}")
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address)
    folder = pathlib.Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    n = len(inputs.paths)
    pending = pending_shards(inputs, folder, count)
    todo = [i for i in pending if len(shard_rows(n, i, count))]
    rows = np.concatenate([np.arange(r.start, r.stop) for r in (shard_rows(n, i, count) for i in todo)] or [[]])
    rows = rows.astype(np.int64)
    if rows.size:
        shard_of = np.empty(n, np.int64)
        for i in range(count):
            r = shard_rows(n, i, count)
            shard_of[r.start : r.stop] = i
        blocks = max(1, min(rows.size // batch_size, 8 * num_workers))  # whole batches per block, work for all
        items = [{"row": int(r), "path": inputs.paths[r]} for r in rows]
        dataset = ray.data.from_items(items, override_num_blocks=blocks)
        embedded = dataset.map_batches(
            EmbedActor,
            fn_constructor_kwargs={"make_embedder": make_embedder, "torch_threads": torch_threads},
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=num_workers,
            num_cpus=cpus_per_worker,
        )
        buffers: dict[int, dict[int, np.ndarray]] = {i: {} for i in todo}
        for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
            for row, vector in zip(batch["row"], batch["embedding"], strict=True):
                shard = int(shard_of[int(row)])
                buffers[shard][int(row)] = vector
                r = shard_rows(n, shard, count)
                if len(buffers[shard]) == len(r):  # the shard is complete: write it now, free its rows
                    done = buffers.pop(shard)
                    write_shard(folder, shard, count, inputs, np.stack([done[j] for j in r]))
        if buffers:
            raise RuntimeError(f"Ray returned no embeddings for some rows of shards {sorted(buffers)}")
    for i in range(count):  # empty shards (more shards than images) are written as empty files
        if not len(shard_rows(n, i, count)) and i in pending:
            write_shard(folder, i, count, inputs, np.empty((0, 0), np.float32))
    return write_manifest(inputs, folder, count)
