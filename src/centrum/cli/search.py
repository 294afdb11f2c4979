"""``centrum search --checkpoint CKPT --index DIR IMAGE...``: the top matches of query images in an index."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from centrum.cli import _inputs

EXAMPLE = """example:
  centrum search query.jpg --checkpoint model.ckpt --index gallery-index -k 5 --picture ranked.png
  centrum search queries/ --checkpoint model.ckpt --index classes        # a centroid index: ranked classes

Queries in class sub-folders (queries/<class>/...) are matched with the index's classes by name: their
results are framed green (same class) or red, and an accuracy is printed. Other queries get neither.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``search`` command."""
    p = subparsers.add_parser(
        "search",
        help="embed query images and print their top matches in an index",
        description="Embed query images with a trained model and print their top-k matches in an index built "
        "by `centrum index build` (per-image: ranked images; centroid index: ranked classes). With "
        "--picture, also save the ranked lists as a PNG (per-image index with image paths).",
        epilog=EXAMPLE,
        formatter_class=_inputs.HelpFormatter,
    )
    p.add_argument("images", nargs="+", type=Path, help="query image files or folders")
    p.add_argument("--checkpoint", required=True, type=Path, help="model.ckpt written by `centrum train`")
    p.add_argument("--index", required=True, type=Path, help="index folder from `centrum index build`")
    p.add_argument("-k", type=int, default=10, help="matches per query (fewer when the index is smaller)")
    p.add_argument("--picture", type=Path, default=None, help="save the ranked lists as a PNG")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when one is visible)")
    p.add_argument("--flip", action="store_true", help="average each query's embedding with its mirror's")
    p.set_defaults(func=run)


def placeholder(path: str, size: int = 96):
    """A grey square naming ``path``: drawn where an image of a ranked list cannot be read."""
    import textwrap

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (200, 200, 200))
    draw = ImageDraw.Draw(image)
    text = "missing:\n" + "\n".join(textwrap.wrap(Path(path).name or path, 14)[:4])
    draw.multiline_text((4, 4), text, fill=(90, 0, 0))
    return image


def load_or_placeholder(path: str):
    """The RGB image at ``path``, or a :func:`placeholder` naming it when it cannot be read."""
    from centrum.data import SampleList

    try:
        return SampleList([path], [0]).load(0)
    except ValueError:
        return placeholder(path)


def draw_ranked_lists(
    query_paths: list[str],
    query_labels: np.ndarray,
    matches: list[list[tuple[str, int, float]]],
    names: dict[int, str],
    out: Path,
) -> list[Path]:
    """Pages of ranked lists (:func:`centrum.reports.plot_search_results`): one row per query, labelled with its
    file name, its matches captioned with class name and distance, framed green / red when the query has a class;
    unreadable images are drawn as placeholders naming their path. Returns the files written."""
    from centrum.reports import plot_search_results

    return plot_search_results(query_paths, list(query_labels), matches, names, out, load=load_or_placeholder)


def run(args: argparse.Namespace) -> int:
    """Embed the queries, search the index, print (and draw) the ranked lists."""
    from centrum.inference import resolve_device
    from centrum.retrieval import load_index

    if args.k < 1:
        raise ValueError(f"-k must be a positive integer, got {args.k}")
    device = resolve_device(args.device)
    index = load_index(args.index)  # any folder `centrum index build` writes, on any backend
    try:
        return _run(args, index, device)
    finally:
        index.close()  # releases a local Qdrant folder


def _run(args: argparse.Namespace, index, device) -> int:
    from centrum.inference import TorchEmbedder, collect_images

    centroids = index.kind == "centroid"
    if args.picture is not None:  # everything --picture needs is checked before anything is printed
        if centroids:
            raise ValueError(
                f"--picture draws matched images, but the index at {args.index} is a centroid index (one entry per "
                "class, no images): build a per-image index (centrum index build without --centroids)"
            )
        if not index.has_paths:
            raise ValueError(
                f"--picture needs image paths, but the index at {args.index} holds none: build it from an .npz "
                "with paths (centrum embed writes them)"
            )
        if args.picture.suffix.lower() not in (".png", ".jpg", ".jpeg", ".pdf", ".svg"):
            raise ValueError(f"--picture {args.picture} must end in .png (or .jpg, .pdf, .svg)")
        _inputs.output_file(args.picture, "picture")
    samples, query_names = collect_images(args.images)
    embedder = TorchEmbedder.from_checkpoint(args.checkpoint, device=device, flip=args.flip)
    queries = embedder.embed_samples(samples)
    if queries.embeddings.shape[1] != index.dim:
        raise ValueError(
            f"the model gives {queries.embeddings.shape[1]}-d embeddings but the index at {args.index} holds "
            f"{index.dim}-d ones: it was built with another model"
        )
    found = index.search(queries.embeddings, args.k)
    names = index.class_names
    labels = _inputs.to_index_labels(queries.labels, dict(enumerate(query_names)), names)
    matches: list[list[tuple[str, int, float]]] = []
    for q, path in enumerate(queries.paths):
        about = "" if labels[q] == -1 else f"  (class {query_names[queries.labels[q]]})"
        print(f"\nquery {path}{about}")
        matches.append([])
        for rank in range(found.indices.shape[1]):
            if found.indices[q, rank] < 0:  # a slot an approximate faiss search could not fill
                continue
            label = int(found.labels[q, rank])
            what = f"class {_inputs.class_name(label, names)}" if label != -1 else "no class"
            if not centroids and found.paths is not None and found.paths[q, rank]:
                entry = _inputs.resolve_entry_path(str(found.paths[q, rank]), args.index)
                matches[-1].append((entry, int(found.labels[q, rank]), float(found.distances[q, rank])))
                what = f"{entry}  ({what})"
            print(f"  {rank + 1:>3}. {found.distances[q, rank]:.4f}  {what}")
    labelled = labels != -1
    if labelled.any():
        correct = found.labels[labelled, 0] == labels[labelled]
        print(
            f"\ntop-1 class accuracy: {100 * float(np.mean(correct)):.2f} % over {int(labelled.sum())} labelled queries"
        )
    if args.picture is not None:
        pages = draw_ranked_lists(list(queries.paths), labels, matches, names, args.picture)
        print(f"\nranked lists saved to {', '.join(map(str, pages))}")
    return 0
