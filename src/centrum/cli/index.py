"""``centrum index build|search``: build a per-image or centroid index from an ``.npz``, search it."""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from centrum.cli.evaluate import load_npz
from centrum.distances import METRICS


def _first(arrays: dict[str, np.ndarray], names: tuple[str, ...], what: str, path: str) -> np.ndarray | None:
    for name in names:
        if name in arrays:
            return arrays[name]
    if what:
        raise ValueError(f"{path} has no {what} array: expected one of {', '.join(names)} (found {', '.join(arrays)})")
    return None


def build(args: argparse.Namespace) -> int:
    """Build an index from the gallery (or embeddings) of an .npz and save it to ``--out``."""
    from centrum.retrieval import CentroidIndex, EmbeddingIndex

    arrays = load_npz(args.embeddings)
    vectors = _first(arrays, ("gallery", "embeddings"), "embeddings", args.embeddings)
    labels = _first(arrays, ("gallery_labels", "labels"), "", args.embeddings)
    if vectors.ndim != 2:
        raise ValueError(f"{args.embeddings}: embeddings must be a 2-D (N x D) matrix, got shape {vectors.shape}")
    if args.centroids:
        if labels is None:
            raise ValueError(
                f"{args.embeddings} has no labels array (gallery_labels or labels): a centroid index needs labels"
            )
        index = CentroidIndex(vectors.shape[1], metric=args.metric)
        index.add(vectors, labels)
    else:
        index = EmbeddingIndex(vectors.shape[1], metric=args.metric, backend=args.backend)
        paths = _first(arrays, ("gallery_paths", "paths"), "", args.embeddings)
        cameras = _first(arrays, ("gallery_cameras", "cameras"), "", args.embeddings)
        index.add(vectors, labels, None if paths is None else [str(p) for p in paths], cameras)
    index.save(args.out)
    print(f"saved {index!r} to {args.out}")
    return 0


def search(args: argparse.Namespace) -> int:
    """Search a saved index with the queries of an .npz; print the top-k and optionally write JSON."""
    from centrum.retrieval import load_index

    index = load_index(args.index)
    arrays = load_npz(args.queries, "--queries")
    queries = _first(arrays, ("query", "queries", "embeddings"), "queries", args.queries)
    result = index.search(queries, args.k)
    query_labels = _first(arrays, ("query_labels", "labels"), "", args.queries)
    for q in range(min(len(queries), args.show)):
        hits = ", ".join(f"{lab}:{d:.4f}" for lab, d in zip(result.labels[q], result.distances[q], strict=True))
        print(f"query {q}" + (f" (label {query_labels[q]})" if query_labels is not None else "") + f": {hits}")
    if query_labels is not None and len(query_labels) == len(queries):
        print(f"top-1 label accuracy: {100 * float(np.mean(result.labels[:, 0] == query_labels)):.2f} %")
    if args.json:
        out = {
            "labels": result.labels.tolist(),
            "distances": result.distances.tolist(),
            "indices": result.indices.tolist(),
        }
        if result.paths is not None:
            out["paths"] = result.paths.tolist()
        pathlib.Path(args.json).write_text(json.dumps(out) + "\n")
        print(f"results written to {args.json}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``index`` command group (``build``, ``search``)."""
    p = subparsers.add_parser("index", help="build or search an embedding index")
    sub = p.add_subparsers(dest="index_command", required=True, metavar="{build,search}")
    b = sub.add_parser("build", help="build an index from an .npz (gallery/embeddings, labels, paths, cameras)")
    b.add_argument("--embeddings", required=True, help=".npz with gallery (or embeddings) and optional labels")
    b.add_argument("--centroids", action="store_true", help="one entry per label: the mean embedding")
    b.add_argument("--out", required=True, help="directory to write the index to")
    b.add_argument("--metric", default="cosine", choices=METRICS)
    b.add_argument("--backend", default="torch", choices=("torch", "faiss-flat", "faiss-ivf", "faiss-hnsw"))
    b.set_defaults(func=build)
    s = sub.add_parser("search", help="search a saved index with the queries of an .npz")
    s.add_argument("index", help="index directory")
    s.add_argument("--queries", required=True, help=".npz with query (or queries, embeddings) [and query_labels]")
    s.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    s.add_argument("--show", type=int, default=10, help="queries to print (default 10)")
    s.add_argument("--json", help="write all results to this JSON file")
    s.set_defaults(func=search)
