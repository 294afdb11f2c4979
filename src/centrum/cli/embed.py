"""``centrum embed --checkpoint CKPT IMAGES...|DIR --out FILE.npz``: embed images with a trained model."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from centrum.cli._inputs import HelpFormatter, class_arrays, output_file

EXAMPLE = """example:
  centrum embed photos/ --checkpoint runs/fashion_mnist_ctl/model.ckpt --out photos.npz
  centrum index build --embeddings photos.npz --out photos-index

  centrum embed photos/ --checkpoint model.ckpt --shard 0/4 --out shards/   # one of 4 shards (+ manifest)
  centrum embed photos/ --checkpoint model.ckpt --ray --workers 4 --shards 8 --out shards/
  centrum index build --manifest shards/ --backend faiss-hnsw --kind image --out photos-index

photos/<class>/*.jpg gives each image the class of its sub-folder; images directly in photos/ have none.
With --shard or --ray, --out is a folder of shard-I-of-N.npz files and manifest.json; a finished shard is
skipped when the command runs again, a missing or damaged one is redone.
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
    p.add_argument("--out", required=True, type=Path, help="output .npz (a folder with --shard or --ray)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when one is visible)")
    p.add_argument("--flip", action="store_true", help="average each image's embedding with its mirror's")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise", help="what to do with an unreadable image")
    p.add_argument("--shard", help="I/N: embed only shard I (0-based) of N of the image list into the folder --out")
    p.add_argument("--ray", action="store_true", help="embed every shard on Ray Data (pip install 'ray[data]')")
    p.add_argument("--address", help="with --ray: the Ray cluster (auto, ray://head:10001); default: start locally")
    p.add_argument("--workers", type=int, default=2, help="with --ray: model actors")
    p.add_argument("--shards", type=int, default=1, help="with --ray: number of shard files N")
    p.set_defaults(func=run)


def default_device(device: str | None) -> str:
    """``device`` checked (a CUDA device must be visible) or, when None, ``"cuda"`` if one is, else ``"cpu"``."""
    from centrum.inference import resolve_device

    return str(resolve_device(device))


def checkpoint_embedder(
    checkpoint: str, device: str = "cpu", flip: bool = False, batch_size: int = 64
) -> Callable[[list[str]], np.ndarray]:
    """``embed_batch(paths) -> N x D`` of a ``centrum train`` checkpoint (a :class:`TorchEmbedder`: the same
    preprocessing and L2-normalised features as ``centrum embed``). Module level, so that
    ``functools.partial(checkpoint_embedder, ...)`` pickles to Ray workers, which build the model once."""
    from PIL import Image

    from centrum.inference import TorchEmbedder

    embedder = TorchEmbedder.from_checkpoint(checkpoint, device=device, flip=flip, batch_size=batch_size)

    def embed_batch(paths: list[str]) -> np.ndarray:
        images = []
        for path in paths:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        return embedder.embed_images(images)

    return embed_batch


class LazyEmbedBatch:
    """``embed_batch`` built on first use: a shard that is already done never loads the model."""

    def __init__(self, make: Callable[[], Callable[[list[str]], np.ndarray]]) -> None:
        self.make = make
        self.embed_batch: Callable[[list[str]], np.ndarray] | None = None

    def __call__(self, paths: list[str]) -> np.ndarray:
        if self.embed_batch is None:
            self.embed_batch = self.make()
        return self.embed_batch(paths)


def run_sharded(args: argparse.Namespace) -> int:
    """``--shard I/N``: embed shard I of N into the folder ``--out`` (skipped when done) and write its
    manifest; ``--ray``: every unfinished shard of ``--shards`` N on a Ray Data actor pool."""
    from centrum.inference.shards import ShardInputs, embed_shard, parse_shard, write_manifest

    if args.shard is not None and args.ray:
        raise ValueError(
            "--shard and --ray do not go together: --ray embeds every shard (set their number by --shards)"
        )
    if args.out.suffix == ".npz" or (args.out.exists() and not args.out.is_dir()):
        raise ValueError(f"--out {args.out} must be a folder with --shard/--ray (it receives shard files)")
    if args.on_error != "raise":
        raise ValueError("--on-error skip is not available with --shard/--ray: a shard keeps every row of its range")
    shard = parse_shard(args.shard) if args.shard is not None else None
    if not args.checkpoint.is_file():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint} does not exist")
    samples, names = collect_images(args.images)
    inputs = ShardInputs.of(list(samples.paths), samples.labels, samples.cameras, names)
    device = "cpu" if args.ray and args.device is None else default_device(args.device)
    make = functools.partial(checkpoint_embedder, str(args.checkpoint.resolve()), device, args.flip, args.batch_size)
    if args.ray:
        from centrum.inference.ray_runner import embed_with_ray, import_ray

        import_ray()  # a clear one-line error before any work when Ray is not installed
        if args.workers < 1 or args.shards < 1:
            raise ValueError(f"--workers and --shards must be positive, got {args.workers} and {args.shards}")
        manifest = embed_with_ray(
            inputs, args.out, args.shards, make, num_workers=args.workers, batch_size=args.batch_size,
            address=args.address,
        )  # fmt: skip
        print(f"{len(inputs.paths)} images in {args.shards} shard(s) on Ray ({args.workers} workers) -> {manifest}")
        return 0
    index, count = shard
    path, computed = embed_shard(inputs, args.out, index, count, LazyEmbedBatch(make), args.batch_size)
    manifest = write_manifest(inputs, args.out, count)
    done = "embedded" if computed else "already done, skipped"
    print(f"shard {index}/{count} of {len(inputs.paths)} images: {path} ({done}); manifest {manifest}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Embed and write the .npz (atomically), or one shard / all shards on Ray into a folder."""
    from centrum.inference import TorchEmbedder
    from centrum.io import save_npz

    if args.shard is not None or args.ray:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}")
        return run_sharded(args)
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
