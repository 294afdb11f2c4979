"""``centrum index build|search``: build a per-image or centroid index from an ``.npz``, search it."""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from centrum.cli import _inputs
from centrum.cli._inputs import load_npz
from centrum.distances import METRICS
from centrum.retrieval.backends.qdrant_backend import qdrant_errors
from centrum.retrieval.folder import INDEX_INFO_FILE, check_build_target
from centrum.retrieval.folder import BackendIndex as BackendIndex  # its import path before the move

BUILD_EXAMPLE = """example:
  centrum embed gallery/ --checkpoint model.ckpt --out gallery.npz
  centrum index build --embeddings gallery.npz --out gallery-index            # one entry per image
  centrum index build --embeddings gallery.npz --out classes --centroids      # one entry per class
  centrum index build --manifest shards/ --backend faiss-hnsw --kind image --out hnsw-index
  centrum index build --embeddings gallery.npz --backend qdrant --qdrant-path qdrant-data --out q-index

The index keeps the class names of the .npz (class_names) and absolute image paths. An existing index
in --out is replaced only with --overwrite (then in one step: readers see the old index or the new one).
"""
SEARCH_EXAMPLE = """example:
  centrum embed queries/ --checkpoint model.ckpt --out queries.npz
  centrum index search gallery-index --queries queries.npz -k 5 --json results.json

Query and index classes are matched by name; an unlabelled query gets no accuracy.
"""


def _first(arrays: dict[str, np.ndarray], names: tuple[str, ...], what: str, path: str) -> np.ndarray | None:
    for name in names:
        if name in arrays:
            return arrays[name]
    if what:
        raise ValueError(f"{path} has no {what} array: expected one of {', '.join(names)} (found {', '.join(arrays)})")
    return None


def _matrix(values: np.ndarray, path: str, what: str) -> np.ndarray:
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.floating):
        raise ValueError(f"{path}: {what} must be a 2-D (N x D) float matrix, got {values.dtype} {values.shape}")
    return values


LEGACY_BACKENDS: tuple[str, ...] = ("torch", "faiss-flat", "faiss-ivf", "faiss-hnsw")
BACKEND_CHOICES: tuple[str, ...] = ("torch", "faiss-flat", "faiss-ivfpq", "faiss-hnsw", "qdrant", "faiss-ivf")


@dataclass
class Gallery:
    """The entries to index: embeddings (N x D) with optional labels, absolute paths and cameras, and the
    class names of the labels."""

    vectors: np.ndarray
    labels: np.ndarray | None
    paths: list[str] | None
    cameras: np.ndarray | None
    names: dict[int, str]
    source: str


def read_gallery(args: argparse.Namespace) -> Gallery:
    """The gallery of ``--embeddings X.npz`` (gallery/embeddings, labels, paths, cameras, class names) or of
    ``--manifest M`` (the shards of ``centrum embed --shard``, concatenated in input order)."""
    if args.manifest is not None:
        from centrum.inference.shards import load_manifest

        shards = load_manifest(args.manifest)
        if shards.embeddings.shape[0] == 0:
            raise ValueError(f"--manifest {args.manifest} holds no embeddings")
        return Gallery(
            shards.embeddings,
            shards.labels,
            [_inputs.absolute_path(p) for p in shards.paths],
            shards.cameras,
            dict(enumerate(shards.class_names)),
            str(args.manifest),
        )
    arrays = load_npz(args.embeddings)
    vectors = _matrix(
        _first(arrays, ("gallery", "embeddings"), "embeddings", args.embeddings), args.embeddings, "embeddings"
    )
    labels = _first(arrays, ("gallery_labels", "labels"), "", args.embeddings)
    paths = _first(arrays, ("gallery_paths", "paths"), "", args.embeddings)
    cameras = _first(arrays, ("gallery_cameras", "cameras"), "", args.embeddings)
    stored = None if paths is None else [_inputs.absolute_path(str(p)) for p in paths]
    return Gallery(vectors, labels, stored, cameras, _inputs.class_table(arrays, "gallery_"), args.embeddings)


def _check_centroid_labels(gallery: Gallery) -> np.ndarray:
    labels = gallery.labels
    if labels is None:
        raise ValueError(
            f"{gallery.source} has no labels array (gallery_labels or labels): a centroid index needs labels"
        )
    if len(labels) == len(gallery.vectors) and (labels < 0).any():
        raise ValueError(
            f"{gallery.source}: {int((labels < 0).sum())} image(s) have no class (label -1); a centroid index "
            "needs a class for every image (put them in class sub-folders)"
        )
    return labels


def uses_backend_format(args: argparse.Namespace) -> bool:
    """True when ``index build`` writes through the backend interface (``--kind`` given, or a backend only
    it has: faiss-ivfpq, qdrant); otherwise it writes the format ``centrum search`` and ``centrum serve`` read."""
    return args.kind is not None or args.backend not in LEGACY_BACKENDS


def qdrant_options(args: argparse.Namespace) -> dict:
    """``path=`` or ``url=`` (+ ``api_key=`` read from ``--qdrant-api-key-file``) and ``collection=`` of the
    qdrant flags; a ``ValueError`` naming the flag when they do not fit."""
    if (args.qdrant_path is None) == (args.qdrant_url is None):
        raise ValueError("--backend qdrant needs exactly one of --qdrant-path DIR (local) or --qdrant-url URL")
    options: dict = {}
    if args.qdrant_path is not None:
        if args.qdrant_api_key_file is not None:
            raise ValueError("--qdrant-api-key-file goes with --qdrant-url, not --qdrant-path")
        options["path"] = str(pathlib.Path(args.qdrant_path).expanduser().resolve())
    else:
        options["url"] = args.qdrant_url
        if args.qdrant_api_key_file is not None:
            key_file = pathlib.Path(args.qdrant_api_key_file)
            if not key_file.is_file():
                raise FileNotFoundError(f"--qdrant-api-key-file {key_file} does not exist")
            options["api_key"] = key_file.read_text().strip()
    if args.collection is not None:
        options["collection"] = args.collection
    return options


def build(args: argparse.Namespace) -> int:
    """Build an index from ``--embeddings`` (an .npz) or ``--manifest`` (embedding shards) into ``--out``."""
    if args.backend not in BACKEND_CHOICES:
        raise ValueError(f"unknown --backend {args.backend!r}; choose one of {', '.join(BACKEND_CHOICES[:-1])}")
    if args.kind is not None and args.centroids and args.kind != "centroid":
        raise ValueError(f"--centroids contradicts --kind {args.kind}")
    qdrant_flags = [args.qdrant_path, args.qdrant_url, args.qdrant_api_key_file, args.collection]
    if args.backend != "qdrant" and any(v is not None for v in qdrant_flags):
        raise ValueError(f"--qdrant-path/--qdrant-url/--qdrant-api-key-file/--collection need --backend qdrant, "
                         f"not {args.backend}")  # fmt: skip
    check_build_target(args.out, args.overwrite)
    if args.backend == "qdrant" and args.qdrant_path is not None:
        data, out = pathlib.Path(args.qdrant_path).resolve(), args.out.resolve()
        if data == out or out in data.parents:
            raise ValueError(
                f"--qdrant-path {args.qdrant_path} must not be inside --out {args.out}: the index folder is "
                "written (and replaced) as a whole; put the Qdrant folder beside it"
            )
    gallery = read_gallery(args)
    with staging_folder(args.out) as staging:
        if uses_backend_format(args):
            message = build_backend(args, gallery, staging)
        else:
            message = build_builtin(args, gallery, staging)
    print(message)
    return 0


@contextlib.contextmanager
def staging_folder(out: pathlib.Path) -> Iterator[pathlib.Path]:
    """A new folder beside ``out`` to build the index in; on a clean exit it takes ``out``'s place in one step
    (:func:`centrum.io.replace_directory`), on an error it is removed and ``out`` is untouched."""
    from centrum.io import replace_directory

    out = out.resolve()
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise ValueError(f"cannot save an index to {out}: folder {parent}: {exc.strerror or exc}") from exc
    try:
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the index from other users
        yield staging
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        replace_directory(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def build_builtin(args: argparse.Namespace, gallery: Gallery, folder: pathlib.Path) -> str:
    """Write the built-in format (``index.npz``) that every command reads into ``folder``."""
    from centrum.retrieval import CentroidIndex, EmbeddingIndex

    if args.centroids:
        index = CentroidIndex(gallery.vectors.shape[1], metric=args.metric)
        index.add(gallery.vectors, _check_centroid_labels(gallery))
    else:
        index = EmbeddingIndex(gallery.vectors.shape[1], metric=args.metric, backend=args.backend)
        index.add(gallery.vectors, gallery.labels, gallery.paths, gallery.cameras)
    names = gallery.names
    index.class_names = {label: name for label, name in names.items()}
    index.save(folder)
    return f"saved {index!r} to {args.out}" + (f" with {len(names)} class names" if names else "")


def build_backend(args: argparse.Namespace, gallery: Gallery, folder: pathlib.Path) -> str:
    """Build through :func:`centrum.retrieval.backends.open_backend` and write ``centrum_index.json`` (plus,
    for torch/faiss, the backend's own files) into ``folder``: what every command that takes an index reads."""

    if args.backend == "faiss-ivf":
        raise ValueError(
            "--backend faiss-ivf is the built-in format's IVF-Flat (without --kind); "
            "the backend interface's inverted file is --backend faiss-ivfpq"
        )
    name = args.backend
    kind = args.kind or ("centroid" if args.centroids else "image")
    options = qdrant_options(args) if name == "qdrant" else {}
    dim = int(gallery.vectors.shape[1])
    with qdrant_errors(options.get("url") or options.get("path") or ""):
        return _build_backend(args, gallery, name, kind, options, dim, folder)


def _open_empty(name: str, dim: int, kind: str, metric: str, options: dict, overwrite: bool):
    """A new backend index; for Qdrant, a collection that holds nothing (emptied first with ``overwrite``)."""
    from centrum.retrieval.backends import open_backend

    index = open_backend(name, dim, kind=kind, metric=metric, **options)
    if name != "qdrant" or not len(index):
        return index
    if not overwrite:
        held = len(index)
        index.close()
        raise ValueError(
            f"qdrant collection {index.collection!r} already holds {held} entries: pass --overwrite to "
            "replace them, or choose another --collection"
        )
    index.client.delete_collection(index.collection)
    return open_backend(name, dim, kind=kind, metric=metric, **options)


def _build_backend(
    args: argparse.Namespace, gallery: Gallery, name: str, kind: str, options: dict, dim: int, folder: pathlib.Path
) -> str:
    from centrum.io import atomic_write_json

    index = _open_empty(name, dim, kind, args.metric, options, args.overwrite)
    try:
        n = len(gallery.vectors)
        if kind == "centroid":
            index.add(gallery.vectors, _check_centroid_labels(gallery))
        else:
            labels = np.full(n, -1, np.int64) if gallery.labels is None else gallery.labels
            index.add(gallery.vectors, labels, gallery.paths, gallery.cameras)
        if name != "qdrant":
            index.save(folder)
        info = {
            "backend": name,
            "kind": kind,
            "dim": dim,
            "metric": args.metric,
            "size": len(index),
            "has_paths": kind == "image" and bool(gallery.paths) and any(gallery.paths),
            "class_names": {str(k): v for k, v in gallery.names.items()},
        }
        if name == "qdrant":
            info["qdrant"] = {
                "path": options.get("path"),
                "url": options.get("url"),
                "api_key_file": None if args.qdrant_api_key_file is None else str(args.qdrant_api_key_file),
                "collection": getattr(index, "collection", None),
            }
        atomic_write_json(folder / INDEX_INFO_FILE, info)
        return f"saved {index!r} with {len(index)} entries to {args.out}" + (
            f" with {len(gallery.names)} class names" if gallery.names else "")  # fmt: skip
    finally:
        if hasattr(index, "close"):
            index.close()  # a local Qdrant folder admits one process at a time


def open_saved_index(directory: pathlib.Path):
    """Whatever ``index build`` wrote in ``directory``, on any backend (:func:`centrum.retrieval.load_index`)."""
    from centrum.retrieval import load_index

    return load_index(directory)


def _hits(result, q: int) -> list[int]:
    """The filled result slots of query ``q`` (a faiss backend may leave some empty)."""
    return [r for r in range(result.indices.shape[1]) if result.indices[q, r] >= 0]


def search(args: argparse.Namespace) -> int:
    """Search a saved index with the queries of an .npz; print the top-k and optionally write JSON."""
    if args.k < 1:
        raise ValueError(f"-k must be a positive integer, got {args.k}")
    out = _inputs.output_file(args.json, "results file") if args.json else None
    index = open_saved_index(args.index)
    try:
        return _search(args, index, out)
    finally:
        index.close()  # releases a local Qdrant folder


def _search(args: argparse.Namespace, index, out) -> int:
    from centrum.io import atomic_write_json

    arrays = load_npz(args.queries, "--queries")
    queries = _matrix(
        _first(arrays, ("query", "queries", "embeddings"), "queries", args.queries), args.queries, "queries"
    )
    if queries.shape[1] != index.dim:
        raise ValueError(
            f"--queries {args.queries} holds {queries.shape[1]}-d embeddings but the index at {args.index} holds "
            f"{index.dim}-d ones: they were made with different models"
        )
    result = index.search(queries, args.k)
    query_labels = _first(arrays, ("query_labels", "labels"), "", args.queries)
    if query_labels is not None and len(query_labels) != len(queries):
        raise ValueError(f"--queries {args.queries}: {len(query_labels)} labels for {len(queries)} queries")
    names = index.class_names
    if query_labels is not None:
        query_labels = _inputs.to_index_labels(query_labels, _inputs.class_table(arrays, "query_"), names)
    for q in range(min(len(queries), args.show)):
        hits = ", ".join(
            f"{_inputs.class_name(result.labels[q, r], names)}:{result.distances[q, r]:.4f}" for r in _hits(result, q)
        )
        about = ""
        if query_labels is not None and query_labels[q] != -1:
            about = (
                f" (class {_inputs.class_name(query_labels[q], names) if query_labels[q] >= 0 else 'not in the index'})"
            )
        print(f"query {q}{about}: {hits}")
    if query_labels is not None:
        labelled = query_labels != -1
        if labelled.any():
            correct = result.labels[labelled, 0] == query_labels[labelled]
            share = 100 * float(np.mean(correct))
            print(f"top-1 label accuracy: {share:.2f} % over {int(labelled.sum())} labelled queries (classes by name)")
    if out is not None:
        kept = [_hits(result, q) for q in range(len(queries))]  # per query; all k unless faiss left slots empty
        report: dict[str, list] = {
            "labels": [result.labels[q, keep].tolist() for q, keep in enumerate(kept)],
            "distances": [[float(d) for d in result.distances[q, keep]] for q, keep in enumerate(kept)],
            "indices": [result.indices[q, keep].tolist() for q, keep in enumerate(kept)],
        }
        if names:
            report["classes"] = [
                [_inputs.class_name(v, names) for v in result.labels[q, keep]] for q, keep in enumerate(kept)
            ]
        if result.paths is not None:
            report["paths"] = [
                [_inputs.resolve_entry_path(str(p), args.index) for p in result.paths[q, keep]]
                for q, keep in enumerate(kept)
            ]
        atomic_write_json(out, report, indent=None)
        print(f"results written to {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``index`` command group (``build``, ``search``)."""
    p = subparsers.add_parser("index", help="build or search an embedding index", formatter_class=_inputs.HelpFormatter,
                              description="Build an index from an .npz of embeddings, or search one.")  # fmt: skip
    sub = p.add_subparsers(dest="index_command", required=True, metavar="{build,search}")
    b = sub.add_parser(
        "build",
        help="build an index from an .npz (gallery/embeddings, labels, paths, cameras, class_names)",
        description="Build a per-image (or, with --centroids, per-class) index from an .npz written by "
        "`centrum embed` or `centrum evaluate --save-embeddings`.",
        epilog=BUILD_EXAMPLE,
        formatter_class=_inputs.HelpFormatter,
    )
    source = b.add_mutually_exclusive_group(required=True)
    source.add_argument("--embeddings", help=".npz with gallery (or embeddings) and optional labels")
    source.add_argument("--manifest", type=pathlib.Path,
                        help="manifest.json (or its folder) of the shards of `centrum embed --shard I/N`")  # fmt: skip
    b.add_argument("--centroids", action="store_true", help="one entry per label: the mean embedding")
    b.add_argument("--out", required=True, type=pathlib.Path, help="directory to write the index to")
    b.add_argument("--metric", default="cosine", choices=METRICS, help="distance")
    b.add_argument("--overwrite", action="store_true",
                   help="replace an index already in --out (and the entries of an existing --collection)")  # fmt: skip
    b.add_argument("--backend", default="torch", metavar="{" + ",".join(BACKEND_CHOICES[:-1]) + "}",
                   help="search engine: torch and faiss-flat exact; faiss-ivfpq, faiss-hnsw approximate; qdrant "
                   "a local folder or a server (faiss-ivf: the built-in format's IVF-Flat)")  # fmt: skip
    b.add_argument("--kind", choices=("image", "centroid"), default=None,
                   help="write through the backend interface: one entry per image, or per class (running mean); "
                   "without it torch/faiss-flat/faiss-hnsw write the format `centrum search`/`serve` read")  # fmt: skip
    b.add_argument("--qdrant-path", help="qdrant: a local folder (embedded mode, one machine)")
    b.add_argument("--qdrant-url", help="qdrant: a server or cluster, e.g. http://localhost:6333")
    b.add_argument("--qdrant-api-key-file", help="qdrant: a file holding the server's API key")
    b.add_argument("--collection", help="qdrant: collection name (default centrum_images / centrum_centroids)")
    b.set_defaults(func=build)
    s = sub.add_parser(
        "search",
        help="search a saved index with the queries of an .npz",
        description="Search an index with the query embeddings of an .npz; prints each query's top-k classes.",
        epilog=SEARCH_EXAMPLE,
        formatter_class=_inputs.HelpFormatter,
    )
    s.add_argument("index", type=pathlib.Path, help="index directory")
    s.add_argument("--queries", required=True, help=".npz with query (or queries, embeddings) [and query_labels]")
    s.add_argument("-k", type=int, default=10, help="neighbours per query (fewer when the index is smaller)")
    s.add_argument("--show", type=int, default=10, help="queries to print")
    s.add_argument("--json", help="write all results to this JSON file")
    s.set_defaults(func=search)
