"""``centrum embed --checkpoint CKPT IMAGES...|DIR --out FILE.npz``: embed images with a trained model."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from centrum.cli._inputs import HelpFormatter, class_arrays, output_file

EXAMPLE = """example:
  centrum embed photos/ --checkpoint runs/fashion_mnist_ctl/model.ckpt --out photos.npz
  centrum index build --embeddings photos.npz --out photos-index

photos/<class>/*.jpg gives each image the class of its sub-folder; images directly in photos/ have none.
"""


def collect_images(inputs: Sequence[Path]):
    """Image files and folders as ``(SampleList, class names)``; see :func:`centrum.inference.collect_images`."""
    from centrum.inference import collect_images as collect

    return collect(inputs)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``embed`` command."""
    p = subparsers.add_parser(
        "embed",
        help="embed images with a trained model into an .npz",
        description="Embed image files or folders with a trained model. Writes FILE.npz with `embeddings` "
        "(L2-normalised inference features, float32), `labels` (index into `class_names`, -1 for an image "
        "outside a class folder), `paths` (absolute), `class_ids` and `class_names`; "
        "`centrum index build --embeddings FILE.npz` indexes it.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("images", nargs="+", type=Path, help="image files or folders (class sub-folders give labels)")
    p.add_argument("--checkpoint", required=True, type=Path, help="model.ckpt written by `centrum train`")
    p.add_argument("--out", required=True, type=Path, help="output .npz")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when one is visible)")
    p.add_argument("--flip", action="store_true", help="average each image's embedding with its mirror's")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise", help="what to do with an unreadable image")
    p.set_defaults(func=run)


def default_device(device: str | None) -> str:
    """``device`` checked (a CUDA device must be visible) or, when None, ``"cuda"`` if one is, else ``"cpu"``."""
    from centrum.inference import resolve_device

    return str(resolve_device(device))


def run(args: argparse.Namespace) -> int:
    """Embed and write the .npz (atomically)."""
    from centrum.inference import TorchEmbedder
    from centrum.io import save_npz

    if args.out.suffix != ".npz":
        raise ValueError(f"--out {args.out} must end in .npz")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}")
    out = output_file(args.out, "embeddings file")  # checked before the (slow) embedding
    samples, names = collect_images(args.images)
    options = {"flip": args.flip, "batch_size": args.batch_size, "on_error": args.on_error}
    embedder = TorchEmbedder.from_checkpoint(args.checkpoint, device=default_device(args.device), **options)
    emb = embedder.embed_samples(samples)
    save_npz(
        out,
        embeddings=emb.embeddings,
        labels=emb.labels,
        paths=np.asarray(emb.paths, dtype=str),
        **class_arrays(dict(enumerate(names))),
    )
    labelled = int((emb.labels >= 0).sum())
    print(
        f"{len(emb.paths)} images ({labelled} in {len(names)} class folders) -> {emb.embeddings.shape[1]}-d "
        f"embeddings in {out}" + (" (flip averaged)" if args.flip else "")
    )
    return 0
