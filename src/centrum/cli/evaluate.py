"""``centrum evaluate``: the evaluation protocols on embeddings stored in an ``.npz`` file, or on a dataset's
query and gallery splits embedded by a trained model (``--checkpoint``)."""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

from centrum.cli import _inputs
from centrum.distances import METRICS

DML_DEFAULT_KS = [1, 2, 4, 8]
EXAMPLE = """examples:
  centrum evaluate --checkpoint runs/fashion_mnist_ctl/model.ckpt --json metrics.json
  centrum evaluate --embeddings emb.npz --protocol reid-centroids --distractor-label 0
"""


def load_npz(path: str | pathlib.Path, name: str = "--embeddings") -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (no pickles); FileNotFoundError / ValueError naming the file."""
    return _inputs.load_npz(path, name)


def _protocol_runs(args: argparse.Namespace) -> list[tuple[str, str, dict]]:
    """(row name, protocol, keyword arguments): centroid protocols always come with the per-image one."""
    common = {"metric": args.metric}
    if args.chunk_size:
        common["chunk_size"] = args.chunk_size
    if args.protocol.startswith("reid"):
        common["max_rank"] = args.max_rank
        runs = [("reid", "reid", common)]
        if args.protocol == "reid-centroids":
            runs.append(
                ("reid-centroids", "reid-centroids", {**common, "distractor_labels": tuple(args.distractor_label)})
            )
        return runs
    if args.protocol.startswith("products"):
        kw = {**common, "ks": tuple(args.ks)}
        runs = [("products", "products", kw)]
        if args.protocol == "products-centroids":
            runs.append(("products-centroids", "products-centroids", kw))
        return runs
    return [
        (
            "dml",
            "dml",
            {
                **common,
                "recall_ks": tuple(args.recall_ks),
                "clustering": not args.no_clustering,
                "seed": args.seed,
                "kmeans": args.kmeans,
            },
        )
    ]


def _checkpoint_arrays(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Embed the query and gallery splits of the checkpoint's dataset (or ``--dataset``/``--root``) with its
    model; without ``--protocol``, evaluates under the protocols the run was evaluated with (its config's
    ``evaluation.protocols``) or else the dataset's own, with centroids."""
    from centrum.data import build_dataset
    from centrum.inference import TorchEmbedder, load_model, protocol_arrays, resolve_device
    from centrum.io import save_npz

    options = _reader_options(args.option, args.dataset)  # checked before the (slow) checkpoint load
    save_to = _inputs.output_file(args.save_embeddings, "embeddings file") if args.save_embeddings else None
    if save_to is not None and save_to.suffix != ".npz":
        raise ValueError(f"--save-embeddings {save_to} must end in .npz")
    device = resolve_device(args.device)
    trained = load_model(args.checkpoint, device)
    data, evaluation = trained.config.get("data", {}), trained.config.get("evaluation", {})
    if args.dataset:
        splits = build_dataset(args.dataset, args.root, **options)
    else:
        splits = build_dataset(data.get("dataset"), args.root or data.get("root"), **(data.get("options") or {}))
    if args.protocol is None:
        # the protocols the run was evaluated with (centroid ones come last), else the dataset's own
        configured = list(evaluation.get("protocols") or [])
        default = {"reid": "reid-centroids", "products": "products-centroids", "dml": "dml"}[splits.protocol]
        args.protocol = configured[-1] if configured and not args.dataset else default
        if args.protocol == "reid-centroids" and not args.distractor_label:
            args.distractor_label = list(evaluation.get("distractor_labels") or [])
        if args.protocol == "dml" and evaluation.get("recall_ks") and args.recall_ks == DML_DEFAULT_KS:
            args.recall_ks = list(evaluation["recall_ks"])
    print(splits.summary())
    embedder = TorchEmbedder(
        trained.model,
        trained.preprocess,
        device,
        name=str(trained.config.get("name", "model")),
        flip=args.flip,
        batch_size=int(data.get("test_batch_size", 128)),
        num_workers=args.workers,
        on_error=str(data.get("on_error", "raise")),
    )
    query, gallery = embedder.embed_splits(splits)
    arrays = protocol_arrays("dml" if args.protocol == "dml" else "reid", query, gallery)
    if save_to is not None:
        extra = {"query_paths": np.asarray(query.paths, dtype=str)}
        if not splits.query_is_gallery:
            extra["gallery_paths"] = np.asarray(gallery.paths, dtype=str)
        else:
            extra["paths"] = extra.pop("query_paths")
        save_npz(save_to, **arrays, **extra, **_inputs.class_arrays(dict(splits.class_names or {})))
        print(f"embeddings written to {save_to} (reuse with --embeddings)")
    return arrays


def _reader_options(items: list[str], dataset: str | None) -> dict:
    """``KEY=VALUE`` items (values read as YAML) as keyword arguments of the dataset reader."""
    import yaml

    if items and not dataset:
        raise ValueError("--option sets a reader option of --dataset; give --dataset too")
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {item!r} must look like KEY=VALUE, e.g. max_per_class=50")
        options[key] = yaml.safe_load(value)
    return options


# --- re-ranking and query expansion: rows printed beside the plain ones ---------------------------------
def _postprocessed_results(args: argparse.Namespace, arrays: dict) -> dict:
    """One more row per protocol run, evaluated after ``--query-expansion`` and ``--rerank`` (if given)."""
    from centrum.evaluation import evaluate_protocol, postprocess_arrays

    if args.rerank is None and not args.query_expansion:
        return {}
    options = {
        "rerank": args.rerank,
        "k1": args.k1,
        "k2": args.k2,
        "lambda_value": args.lambda_value,
        "query_expansion": args.query_expansion,
        "qe_k": args.qe_k,
        "qe_alpha": args.qe_alpha,
        "metric": args.metric,
        "chunk_size": args.chunk_size or None,
    }
    rows = {}
    for name, protocol, kw in _protocol_runs(args):
        processed, label = postprocess_arrays(protocol, arrays, **options)
        if label:
            rows[f"{name} + {label}"] = evaluate_protocol(protocol, processed, **kw)
    return rows


def _add_postprocess_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rerank",
        choices=("k-reciprocal",),
        help="also report the per-image protocols after k-reciprocal re-ranking (Zhong et al. 2017)",
    )
    p.add_argument("--k1", type=int, default=20, help="--rerank: k-reciprocal neighbourhood size (default 20)")
    p.add_argument("--k2", type=int, default=6, help="--rerank: local query expansion size (default 6)")
    p.add_argument(
        "--lambda", dest="lambda_value", type=float, default=0.3, help="--rerank: weight of the original distance"
    )
    p.add_argument(
        "--query-expansion",
        nargs="+",
        choices=("alpha-qe", "dba"),
        default=[],
        help="also report after alpha-weighted query expansion and/or database-side augmentation (DBA first)",
    )
    p.add_argument("--qe-k", type=int, default=5, help="--query-expansion: neighbours averaged (default 5)")
    p.add_argument("--qe-alpha", type=float, default=3.0, help="--query-expansion: similarity exponent (default 3)")


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table and optionally write the metrics (fractions) as JSON."""
    from centrum.evaluation import evaluate_protocol
    from centrum.io import atomic_write_json
    from centrum.training.results import format_results_table

    if (args.embeddings is None) == (args.checkpoint is None):
        raise ValueError("give either --embeddings FILE.npz or --checkpoint CKPT")
    if args.flip and args.checkpoint is None:
        raise ValueError("--flip embeds images: it needs --checkpoint")
    out = _inputs.output_file(args.json, "metrics file") if args.json else None  # checked before evaluating
    if args.checkpoint is not None:
        arrays = _checkpoint_arrays(args)
    else:
        if args.protocol is None:
            raise ValueError("--protocol is required with --embeddings")
        arrays = load_npz(args.embeddings)
    results = {name: evaluate_protocol(protocol, arrays, **kw) for name, protocol, kw in _protocol_runs(args)}
    results.update(_postprocessed_results(args, arrays))
    # the table `centrum train` prints: blocks of columns within 100 characters, centroid rows labelled
    print(format_results_table(results))
    if out is not None:
        atomic_write_json(out, results)
        print(f"metrics written to {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command."""
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate embeddings with a published protocol",
        description="Evaluate a trained model (--checkpoint) on its dataset, or embeddings stored in an .npz: "
        "arrays query, gallery (or a Q x G distances matrix, per-image protocols only), query_labels, "
        "gallery_labels [, query_cameras, gallery_cameras] (reid, products) or embeddings, labels (dml). "
        "Centroid protocols are reported beside the per-image one. Printed values are percent; --json writes "
        "fractions.",
        epilog=EXAMPLE,
        formatter_class=_inputs.HelpFormatter,
    )
    p.add_argument("--embeddings", help=".npz file with the embeddings (or distances) and labels")
    p.add_argument(
        "--checkpoint",
        type=pathlib.Path,
        help="model.ckpt from `centrum train`: embed its dataset's "
        "query and gallery splits and evaluate (per-image and centroids by default)",
    )
    p.add_argument("--dataset", help="with --checkpoint: evaluate on this dataset instead of the training one")
    p.add_argument("--root", help="with --checkpoint: the dataset's folder (default: the config's data.root)")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --dataset: a reader option, e.g. max_per_class=50 (repeatable)",
    )
    p.add_argument("--save-embeddings", type=pathlib.Path, help="with --checkpoint: also write the embeddings .npz")
    p.add_argument(
        "--device", default=None, help="with --checkpoint: cpu, cuda or cuda:N (default: cuda when one is visible)"
    )
    p.add_argument("--workers", type=int, default=2, help="with --checkpoint: data loading workers")
    p.add_argument(
        "--flip", action="store_true", help="with --checkpoint: average each image's embedding with its mirror's"
    )
    p.add_argument(
        "--protocol",
        choices=("reid", "reid-centroids", "products", "products-centroids", "dml"),
        help="required with --embeddings; with --checkpoint the dataset's own protocol, with centroids",
    )
    p.add_argument("--metric", default="cosine", choices=METRICS, help="distance")
    p.add_argument("--json", help="write the metrics to this JSON file")
    p.add_argument("--max-rank", type=int, default=50, help="re-id: length of the CMC curve")
    p.add_argument(
        "--distractor-label",
        type=int,
        action="append",
        default=[],
        help="reid-centroids: gallery label whose images stay singletons (repeatable; Market-1501: 0)",
    )
    p.add_argument("--ks", type=int, nargs="+", default=[1, 10, 20, 30, 50], help="products: Acc@k cut-offs")
    p.add_argument(
        "--recall-ks", type=int, nargs="+", default=DML_DEFAULT_KS, help="dml: Recall@K cut-offs (SOP: 1 10 100 1000)"
    )
    p.add_argument("--no-clustering", action="store_true", help="dml: skip k-means, NMI and F1")
    p.add_argument("--kmeans", default="auto", choices=("auto", "sklearn", "faiss"), help="dml: k-means backend")
    p.add_argument("--seed", type=int, default=0, help="dml: k-means seed")
    p.add_argument("--chunk-size", type=int, default=None, help="queries per block (default: automatic)")
    _add_postprocess_arguments(p)
    p.set_defaults(func=run)
