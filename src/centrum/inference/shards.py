"""Embedding a large image collection in shards: deterministic, resumable, one ``.npz`` per shard + a manifest.

The input list (paths, with optional labels and cameras) is split into ``count`` contiguous shards: shard ``i``
(0-based) holds rows ``[i n / count, (i + 1) n / count)``, so any machine can compute its part from the list
alone (``centrum embed --shard i/count``). Each shard is written atomically (:mod:`centrum.io`) as
``shard-<i>-of-<count>.npz`` holding ``embeddings``, ``paths``, ``labels``, ``cameras``, ``class_names``,
``rows`` (the positions in the input list) and ``fingerprint`` (a hash of the whole input list). Re-running
skips a finished shard (readable, same fingerprint, right size) and redoes one that is missing or unreadable
(e.g. a file truncated by a crash elsewhere); a killed writer never leaves a half-written file under the final
name, only a temporary one that the next write removes.

The manifest (``manifest.json``) lists the shards and whether all are done; :func:`load_manifest` reads the
shards back, in input order, for index building. The embedding itself is a callable
``embed_batch(list[path]) -> N x D array``, so the same shards come from any model or runner
(:mod:`centrum.inference.ray_runner` writes them from a Ray Data actor pool).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from centrum.io import atomic_write_json, save_npz

EmbedBatch = Callable[[list[str]], np.ndarray]
MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1


@dataclass
class ShardInputs:
    """The input list: image ``paths`` with their ``labels`` and ``cameras`` (-1 = none) and optional
    ``class_names`` (the name of label i at position i)."""

    paths: list[str]
    labels: np.ndarray
    cameras: np.ndarray
    class_names: list[str]

    @classmethod
    def of(
        cls,
        paths: Sequence[str | os.PathLike],
        labels: Sequence[int] | np.ndarray | None = None,
        cameras: Sequence[int] | np.ndarray | None = None,
        class_names: Sequence[str] | None = None,
    ) -> ShardInputs:
        """Checked inputs: labels and cameras default to -1 and must have one entry per path."""
        names = [os.fspath(p) for p in paths]
        n = len(names)
        out = []
        for field, values in (("labels", labels), ("cameras", cameras)):
            a = np.full(n, -1, np.int64) if values is None else np.asarray(values, dtype=np.int64)
            if a.shape != (n,):
                raise ValueError(f"{field} has {a.shape[0] if a.ndim else 1} entries but there are {n} paths")
            out.append(a)
        return cls(names, out[0], out[1], [str(c) for c in class_names or []])

    def fingerprint(self) -> str:
        """SHA-256 of the paths, labels and cameras: shards of another input list are not mistaken for ours."""
        digest = hashlib.sha256()
        digest.update("\n".join(self.paths).encode())
        digest.update(self.labels.tobytes())
        digest.update(self.cameras.tobytes())
        return digest.hexdigest()


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n) as ``(i, n)``; a ``ValueError`` naming the value otherwise."""
    try:
        index_text, count_text = str(spec).split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ValueError(f"shard must be I/N with 0 <= I < N (e.g. 0/4), got {spec!r}") from None
    check_shard(index, count)
    return index, count


def check_shard(index: int, count: int) -> None:
    """Shard ``index`` of ``count`` must satisfy 0 <= index < count."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index}/{count} is out of range: need 0 <= I < N and N >= 1")


def shard_rows(n: int, index: int, count: int) -> range:
    """The rows of shard ``index`` of ``count`` over ``n`` inputs: a contiguous, deterministic range; the
    shards of one ``count`` cover ``range(n)`` exactly once, sizes differing by at most one."""
    check_shard(index, count)
    return range(index * n // count, (index + 1) * n // count)


def shard_path(out_dir: str | os.PathLike, index: int, count: int) -> pathlib.Path:
    """Where shard ``index`` of ``count`` is written."""
    return pathlib.Path(out_dir) / f"shard-{index:05d}-of-{count:05d}.npz"


def read_shard(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a shard file (``ValueError`` if unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"shard {path} is unreadable: {exc}") from exc


def shard_done(path: pathlib.Path, fingerprint: str, rows: range) -> bool:
    """True when ``path`` is a complete shard of this input list with these rows."""
    if not path.is_file():
        return False
    try:
        arrays = read_shard(path)
    except ValueError:
        return False  # half-written or damaged: redo it
    if str(arrays.get("fingerprint", "")) != fingerprint:
        raise ValueError(
            f"{path} is a shard of a different input list (fingerprint differs): use another output folder"
        )
    return arrays["rows"].shape == (len(rows),) and arrays["embeddings"].shape[0] == len(rows)


def write_shard(
    out_dir: str | os.PathLike, index: int, count: int, inputs: ShardInputs, embeddings: np.ndarray
) -> pathlib.Path:
    """Write shard ``index`` of ``count`` atomically from its rows' ``embeddings`` (rows x D)."""
    rows = shard_rows(len(inputs.paths), index, count)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(rows):
        raise ValueError(f"shard {index}/{count} has {len(rows)} images but {embeddings.shape} embeddings")
    sl = slice(rows.start, rows.stop)
    pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)
    return save_npz(
        shard_path(out_dir, index, count),
        embeddings=embeddings,
        paths=np.array(inputs.paths[sl], dtype=str),
        labels=inputs.labels[sl],
        cameras=inputs.cameras[sl],
        class_names=np.array(inputs.class_names, dtype=str),
        rows=np.arange(rows.start, rows.stop, dtype=np.int64),
        fingerprint=np.array(inputs.fingerprint()),
    )


def embed_rows(paths: list[str], embed_batch: EmbedBatch, batch_size: int) -> np.ndarray:
    """``embed_batch`` over ``paths`` in batches of ``batch_size``, stacked (N x D float32)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    parts = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        out = np.asarray(embed_batch(chunk), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(chunk):
            raise ValueError(f"embed_batch returned shape {out.shape} for {len(chunk)} images")
        parts.append(out)
    return np.concatenate(parts) if parts else np.empty((0, 0), np.float32)


def embed_shard(
    inputs: ShardInputs,
    out_dir: str | os.PathLike,
    index: int,
    count: int,
    embed_batch: EmbedBatch,
    batch_size: int = 64,
) -> tuple[pathlib.Path, bool]:
    """Embed shard ``index`` of ``count`` of ``inputs`` into ``out_dir`` unless it is already done;
    return its path and whether it was computed now (False = skipped)."""
    rows = shard_rows(len(inputs.paths), index, count)
    path = shard_path(out_dir, index, count)
    if shard_done(path, inputs.fingerprint(), rows):
        return path, False
    embeddings = embed_rows(inputs.paths[rows.start : rows.stop], embed_batch, batch_size)
    if not len(rows):
        embeddings = np.empty((0, 0), np.float32)
    return write_shard(out_dir, index, count, inputs, embeddings), True


def pending_shards(inputs: ShardInputs, out_dir: str | os.PathLike, count: int) -> list[int]:
    """The shards of ``count`` not yet finished in ``out_dir``."""
    fp, n = inputs.fingerprint(), len(inputs.paths)
    return [i for i in range(count) if not shard_done(shard_path(out_dir, i, count), fp, shard_rows(n, i, count))]


def write_manifest(inputs: ShardInputs, out_dir: str | os.PathLike, count: int) -> pathlib.Path:
    """Write ``out_dir/manifest.json``: every shard's file and rows, which are done, and ``complete``."""
    folder = pathlib.Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fp, n = inputs.fingerprint(), len(inputs.paths)
    shards = []
    for i in range(count):
        rows = shard_rows(n, i, count)
        path = shard_path(folder, i, count)
        shards.append(
            {"index": i, "file": path.name, "start": rows.start, "stop": rows.stop, "done": shard_done(path, fp, rows)}
        )
    manifest = {
        "format_version": MANIFEST_VERSION,
        "count": count,
        "size": n,
        "fingerprint": fp,
        "complete": all(s["done"] for s in shards),
        "shards": shards,
    }
    return atomic_write_json(folder / MANIFEST_FILE, manifest)


def embed_all(
    inputs: ShardInputs,
    out_dir: str | os.PathLike,
    count: int,
    embed_batch: EmbedBatch,
    batch_size: int = 64,
) -> pathlib.Path:
    """Embed every unfinished shard of ``count`` in this process, then write and return the manifest."""
    for i in range(count):
        embed_shard(inputs, out_dir, i, count, embed_batch, batch_size)
    return write_manifest(inputs, out_dir, count)


@dataclass
class ShardedEmbeddings:
    """All shards of a manifest concatenated in input order, ready for index building."""

    embeddings: np.ndarray
    paths: list[str]
    labels: np.ndarray
    cameras: np.ndarray
    class_names: list[str]


def load_manifest(manifest: str | os.PathLike) -> ShardedEmbeddings:
    """Read the shards listed in ``manifest`` (a ``manifest.json`` or its folder); every shard must be
    present and belong to the manifest's input list, else a ``ValueError`` names the missing ones."""
    path = pathlib.Path(manifest)
    if path.is_dir():
        path = path / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no shard manifest at {path}")
    try:
        data = json.loads(path.read_text())
        shards, fp = data["shards"], data["fingerprint"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a shard manifest: {exc}") from exc
    parts, missing = [], []
    for entry in shards:
        file = path.parent / entry["file"]
        try:
            arrays = read_shard(file) if file.is_file() else None
        except ValueError:
            arrays = None
        size = entry["stop"] - entry["start"]
        if arrays is None or str(arrays["fingerprint"]) != fp or arrays["rows"].shape[0] != size:
            missing.append(entry["file"])
        else:
            parts.append(arrays)
    if missing:
        raise ValueError(f"{path}: {len(missing)} shard(s) missing or incomplete: {', '.join(missing[:5])}")
    dims = {p["embeddings"].shape[1] for p in parts if p["embeddings"].shape[0]}
    if len(dims) > 1:
        raise ValueError(f"{path}: shards have different embedding sizes {sorted(dims)}")
    dim = dims.pop() if dims else 0
    return ShardedEmbeddings(
        embeddings=np.concatenate([p["embeddings"].reshape(-1, dim) for p in parts]).astype(np.float32),
        paths=[str(s) for p in parts for s in p["paths"]],
        labels=np.concatenate([p["labels"] for p in parts]).astype(np.int64),
        cameras=np.concatenate([p["cameras"] for p in parts]).astype(np.int64),
        class_names=[str(c) for c in parts[0]["class_names"]] if parts else [],
    )


def image_embedder(model, image_size: int = 32, device: str = "cpu") -> EmbedBatch:
    """``embed_batch`` for a torch embedding model: each image read with Pillow as RGB, resized to
    ``image_size`` square, scaled to [0, 1]; the model run in eval mode without gradients (its ``embed``
    method when it has one, as :class:`centrum.models.EmbeddingModel` does)."""
    import torch
    from PIL import Image

    model = model.to(device).eval()

    def embed_batch(paths: list[str]) -> np.ndarray:
        images = []
        for p in paths:
            with Image.open(p) as image:
                rgb = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
                images.append(np.asarray(rgb, dtype=np.float32) / 255.0)
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(device)
        with torch.no_grad():
            out = model.embed(batch) if hasattr(model, "embed") else model(batch)
            return out.float().cpu().numpy()

    return embed_batch


def seeded_small_cnn_embedder(seed: int = 0, embedding_dim: int = 64, image_size: int = 32) -> EmbedBatch:
    """``embed_batch`` of a small CNN initialised from ``seed``: the same weights in every process, so runners
    can be compared (tests, ``benchmarks/scale.py``); untrained, so not for retrieval quality."""
    import torch

    from centrum.models import build_model

    torch.manual_seed(seed)
    model = build_model("small_cnn", embedding_dim=embedding_dim, bnneck=False)
    return image_embedder(model, image_size)
