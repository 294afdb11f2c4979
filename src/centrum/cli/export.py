"""``centrum export --checkpoint CKPT --format onnx|torchscript --out FILE``: a self-contained embedding model."""

from __future__ import annotations

import argparse
from pathlib import Path

from centrum.cli._inputs import HelpFormatter


def run(args: argparse.Namespace) -> int:
    """Export the checkpoint's embedding model with its preprocessing metadata."""
    from centrum.export import export_checkpoint

    path = export_checkpoint(args.checkpoint, args.format, args.out)
    print(f"exported {args.checkpoint} as {args.format} to {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` command."""
    p = subparsers.add_parser(
        "export",
        help="export a trained model to ONNX or TorchScript",
        description="Write the checkpoint's embedding model (input `images` B x 3 x H x W with a dynamic batch axis, "
        "output `embeddings` B x D, L2-normalised) with its preprocessing (input size, resize, mean/std, feature, "
        "normalisation) stored in the file, so that the file alone embeds an image.",
        epilog="examples:\n"
        "  centrum export --checkpoint runs/fmnist/model.ckpt --format onnx --out model.onnx\n"
        "  centrum export --checkpoint runs/fmnist/model.ckpt --format torchscript --out model.ts",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="model.ckpt written by `centrum train`")
    p.add_argument("--format", default="onnx", choices=("onnx", "torchscript"), help="file format")
    p.add_argument("--out", required=True, type=Path, help="output file (.onnx, or .ts for TorchScript)")
    p.set_defaults(func=run)
