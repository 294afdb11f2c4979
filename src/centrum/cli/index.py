"""``centrum index build|search``: build a per-image or centroid index from an ``.npz``, search it."""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

from centrum.cli import _inputs
from centrum.cli._inputs import load_npz
from centrum.distances import METRICS

BUILD_EXAMPLE = """example:
  centrum embed gallery/ --checkpoint model.ckpt --out gallery.npz
  centrum index build --embeddings gallery.npz --out gallery-index            # one entry per image
  centrum index build --embeddings gallery.npz --out classes --centroids      # one entry per class

The index keeps the class names of the .npz (class_names) and absolute image paths.
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


def build(args: argparse.Namespace) -> int:
    """Build an index from the gallery (or embeddings) of an .npz and save it to ``--out``."""
    from centrum.retrieval import CentroidIndex, EmbeddingIndex

    arrays = load_npz(args.embeddings)
    vectors = _matrix(
        _first(arrays, ("gallery", "embeddings"), "embeddings", args.embeddings), args.embeddings, "embeddings"
    )
    labels = _first(arrays, ("gallery_labels", "labels"), "", args.embeddings)
    names = _inputs.class_table(arrays, "gallery_")
    if args.centroids:
        if labels is None:
            raise ValueError(
                f"{args.embeddings} has no labels array (gallery_labels or labels): a centroid index needs labels"
            )
        if len(labels) == len(vectors) and (labels < 0).any():
            raise ValueError(
                f"{args.embeddings}: {int((labels < 0).sum())} image(s) have no class (label -1); a centroid index "
                "needs a class for every image (put them in class sub-folders)"
            )
        index = CentroidIndex(vectors.shape[1], metric=args.metric)
        index.add(vectors, labels)
    else:
        index = EmbeddingIndex(vectors.shape[1], metric=args.metric, backend=args.backend)
        paths = _first(arrays, ("gallery_paths", "paths"), "", args.embeddings)
        cameras = _first(arrays, ("gallery_cameras", "cameras"), "", args.embeddings)
        stored = None if paths is None else [_inputs.absolute_path(str(p)) for p in paths]
        index.add(vectors, labels, stored, cameras)
    index.class_names = {label: name for label, name in names.items()}
    index.save(args.out)
    print(f"saved {index!r} to {args.out}" + (f" with {len(names)} class names" if names else ""))
    return 0


def _hits(result, q: int) -> list[int]:
    """The filled result slots of query ``q`` (a faiss backend may leave some empty)."""
    return [r for r in range(result.indices.shape[1]) if result.indices[q, r] >= 0]


def search(args: argparse.Namespace) -> int:
    """Search a saved index with the queries of an .npz; print the top-k and optionally write JSON."""
    from centrum.io import atomic_write_json
    from centrum.retrieval import load_index

    if args.k < 1:
        raise ValueError(f"-k must be a positive integer, got {args.k}")
    out = _inputs.output_file(args.json, "results file") if args.json else None
    index = load_index(args.index)
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
    b.add_argument("--embeddings", required=True, help=".npz with gallery (or embeddings) and optional labels")
    b.add_argument("--centroids", action="store_true", help="one entry per label: the mean embedding")
    b.add_argument("--out", required=True, type=pathlib.Path, help="directory to write the index to")
    b.add_argument("--metric", default="cosine", choices=METRICS, help="distance")
    b.add_argument("--backend", default="torch", choices=("torch", "faiss-flat", "faiss-ivf", "faiss-hnsw"),
                   help="search structure of a per-image index")  # fmt: skip
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
