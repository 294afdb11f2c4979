"""``centrum search --checkpoint CKPT --index DIR IMAGE...``: the top matches of query images in an index."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``search`` command."""
    p = subparsers.add_parser(
        "search",
        help="embed query images and print their top matches in an index",
        description="Embed query images with a trained model and print their top-k matches in an index built "
        "by `centrum index build` (per-image: ranked images; centroid index: ranked classes). With "
        "--picture, also save the ranked list as a PNG (per-image index with paths).",
    )
    p.add_argument("images", nargs="+", type=Path, help="query image files or folders")
    p.add_argument("--checkpoint", required=True, type=Path, help="model.ckpt written by `centrum train`")
    p.add_argument("--index", required=True, type=Path, help="index folder from `centrum index build`")
    p.add_argument("-k", type=int, default=10, help="number of matches per query (default 10)")
    p.add_argument("--picture", type=Path, default=None, help="save the ranked list as a PNG")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Embed the queries, search the index, print (and draw) the ranked lists."""
    import numpy as np
    from PIL import Image

    from centrum.cli.embed import default_device, embed_paths
    from centrum.retrieval import CentroidIndex, load_index
    from centrum.training import load_trained_model

    device = default_device(args.device)
    trained = load_trained_model(args.checkpoint, map_location=device)
    index = load_index(args.index)
    queries, _ = embed_paths(trained, args.images, device=device)
    if queries.embeddings.shape[1] != index.dim:
        raise ValueError(
            f"the model gives {queries.embeddings.shape[1]}-d embeddings but the index at {args.index} holds "
            f"{index.dim}-d ones: it was built with another model"
        )
    found = index.search(queries.embeddings, args.k)
    centroids = isinstance(index, CentroidIndex)
    for q, path in enumerate(queries.paths):
        print(f"\nquery {path}")
        for rank in range(found.indices.shape[1]):
            if found.indices[q, rank] < 0:
                break
            what = f"class {found.labels[q, rank]}"
            if not centroids and found.paths is not None:
                what = f"{found.paths[q, rank]}  (label {found.labels[q, rank]})"
            print(f"  {rank + 1:>3}. {found.distances[q, rank]:.4f}  {what}")
    if args.picture is not None:
        if centroids or found.paths is None:
            raise ValueError("--picture needs a per-image index built with image paths (centrum embed keeps them)")
        from centrum.reports import plot_ranked_lists

        def load(path: str) -> Image.Image:
            return Image.open(path).convert("RGB")

        flat_paths = list(found.paths.reshape(-1))
        ranked = np.arange(len(flat_paths)).reshape(found.paths.shape)
        plot_ranked_lists(
            lambda i: load(queries.paths[i]),
            lambda j: load(flat_paths[j]),
            list(range(len(queries.paths))),
            ranked,
            queries.labels,
            found.labels.reshape(-1),
            args.picture,
            distances=found.distances,
        )
        print(f"\nranked list saved to {args.picture}")
    return 0
