"""``centrum embed --checkpoint CKPT IMAGES...|DIR --out FILE.npz``: embed images with a trained model."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def collect_images(inputs: Sequence[Path]):
    """Image files named on the command line or found (recursively) in folders, as a SampleList.

    An image under ``FOLDER/<class>/...`` of a folder given on the command line gets that class as its
    label (class folders sorted by name, numbered from 0); other images get label -1. Returns
    ``(samples, class_names)``.
    """
    from centrum.data import IMAGE_SUFFIXES, SampleList

    paths: list[str] = []
    classes: list[str | None] = []
    for item in inputs:
        item = Path(item)
        if item.is_file():
            paths.append(str(item))
            classes.append(None)
        elif item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ValueError(f"folder {item} holds no image ({', '.join(IMAGE_SUFFIXES)})")
            for f in files:
                rel = f.relative_to(item)
                paths.append(str(f))
                classes.append(rel.parts[0] if len(rel.parts) > 1 else None)
        else:
            raise FileNotFoundError(f"{item} is neither an image file nor a folder")
    names = sorted({c for c in classes if c is not None})
    index = {name: i for i, name in enumerate(names)}
    labels = np.array([index[c] if c is not None else -1 for c in classes], dtype=np.int64)
    return SampleList(paths, labels), names


def embed_paths(trained, inputs: Sequence[Path], batch_size: int = 64, device: str = "cpu", on_error: str = "raise"):
    """Embed image files/folders with a :class:`~centrum.training.TrainedModel`; returns (Embeddings, class names)."""
    from centrum.training.datamodule import RetrievalDataModule
    from centrum.training.inference import embed_samples

    samples, names = collect_images(inputs)
    data = {**vars(trained.config.data), "test_batch_size": batch_size, "num_workers": 0, "on_error": on_error}
    loader = RetrievalDataModule(**data).eval_dataloader(samples)
    return embed_samples(trained.model, samples, loader, device), names


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``embed`` command."""
    p = subparsers.add_parser(
        "embed",
        help="embed images with a trained model into an .npz",
        description="Embed image files or folders with a trained model. Writes FILE.npz with `embeddings` "
        "(L2-normalised inference features), `labels` (class sub-folder index, -1 when none), `paths` and "
        "`class_names`; `centrum index build --embeddings FILE.npz` indexes it.",
    )
    p.add_argument("images", nargs="+", type=Path, help="image files or folders (class sub-folders give labels)")
    p.add_argument("--checkpoint", required=True, type=Path, help="model.ckpt written by `centrum train`")
    p.add_argument("--out", required=True, type=Path, help="output .npz")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise", help="what to do with an unreadable image")
    p.set_defaults(func=run)


def default_device(device: str | None) -> str:
    """``device`` or, when None, ``"cuda"`` if a GPU is visible else ``"cpu"``."""
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def run(args: argparse.Namespace) -> int:
    """Embed and write the .npz."""
    from centrum.training import load_trained_model

    device = default_device(args.device)
    trained = load_trained_model(args.checkpoint, map_location=device)
    emb, names = embed_paths(trained, args.images, args.batch_size, device, args.on_error)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        args.out,
        embeddings=emb.embeddings,
        labels=emb.labels,
        paths=np.asarray(emb.paths),
        class_names=np.asarray(names, dtype=str),
    )
    print(f"{len(emb.paths)} images -> {emb.embeddings.shape[1]}-d embeddings in {args.out}")
    return 0
