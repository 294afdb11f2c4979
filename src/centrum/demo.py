"""The demo (``make demo`` / ``python -m centrum.demo``): train on the first Fashion-MNIST classes, retrieve
on the unseen ones, with three recipes side by side.

1. checks that Fashion-MNIST is installed (the Debian package ``dataset-fashion-mnist``, which ``make demo``
   installs when it is missing); without it, prints the command that installs it and stops;
2. trains the triplet baseline, triplet + Symmetrical Synthesis and the CTL model from
   ``configs/fashion_mnist_*.yaml`` (classes 0-4: T-shirt .. coat);
3. evaluates each under the product-retrieval protocol on classes 5-9 (sandal .. ankle boot), never seen
   in training, per image and with gallery centroids, and prints one table;
4. saves per model a ranked-list picture of a few queries, a t-SNE map of the unseen classes and the
   training curves, and ``results.md``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from centrum.data import build_dataset
from centrum.data.fashion import FASHION_MNIST_ROOT

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIGS = {
    "triplet": "fashion_mnist_triplet.yaml",
    "triplet + Symm": "fashion_mnist_triplet_symm.yaml",
    "CTL model": "fashion_mnist_ctl.yaml",
}
FASHION_MNIST_FILES = [f"{s}-{k}-ubyte.gz" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]


def ensure_fashion_mnist(root: Path = FASHION_MNIST_ROOT, install: bool = False) -> Path:
    """Return the Fashion-MNIST folder; exit with the command that installs it when its files are missing.

    The demo installs nothing itself (``make demo`` runs that command when needed); ``install`` is accepted
    for older callers and ignored.
    """
    del install
    missing = [f for f in FASHION_MNIST_FILES if not (root / f).is_file()]
    if missing:
        sys.exit(
            f"Fashion-MNIST is not installed in {root} (missing {', '.join(missing)}). Install the Debian package "
            "with:\n  sudo apt-get install -y dataset-fashion-mnist\nor run `make demo`, which does it, then run the "
            "demo again."
        )
    return root


def demo_table(results: dict[str, dict[str, dict]], spreads: dict[str, float] | None = None) -> str:
    """A Markdown table: per-image and centroid mAP and Recall@1 (= Acc@1) per model, in percent; with
    ``spreads``, a last column with each model's embedding spread (mean pairwise cosine distance of a fixed
    sample of training images after the last epoch: near 0 means the embeddings collapsed)."""
    header = "| model | mAP | Recall@1 | centroid mAP | centroid Recall@1 |"
    rule = "|---|---:|---:|---:|---:|"
    if spreads is not None:
        header, rule = header + " embedding spread |", rule + "---:|"
    lines = [header, rule]
    for name, metrics in results.items():
        per_image, centroids = metrics["products"], metrics["products-centroids"]
        values = (per_image["mAP"], per_image["Acc@1"], centroids["mAP"], centroids["Acc@1"])
        line = f"| {name} | " + " | ".join(f"{100 * v:.1f}" for v in values) + " |"
        if spreads is not None:
            line += f" {spreads[name]:.3f} |" if name in spreads else " |"
        lines.append(line)
    return "\n".join(lines)


def save_pictures(
    checkpoint: Path, splits, out: Path, name: str, title: str, queries: int = 6, k: int = 8
) -> list[Path]:
    """Reload a trained model from its checkpoint; save the ranked lists of a few queries (one per unseen class)
    and a t-SNE map of the gallery embeddings. Returns the two PNG paths."""
    import numpy as np

    from centrum.inference import TorchEmbedder
    from centrum.reports import plot_embedding_map, plot_ranked_lists
    from centrum.retrieval import EmbeddingIndex

    embedder = TorchEmbedder.from_checkpoint(checkpoint, device="cpu")
    rng = np.random.default_rng(0)
    labels = splits.query.labels
    # one query per unseen class, so that the picture shows every class
    picks = [int(rng.choice(np.flatnonzero(labels == c))) for c in np.unique(labels)][:queries]
    query = embedder.embed_samples(splits.query.subset(picks))
    gallery = embedder.embed_samples(splits.gallery)
    index = EmbeddingIndex(gallery.embeddings.shape[1], metric="cosine")
    index.add(gallery.embeddings, labels=gallery.labels)
    found = index.search(query.embeddings, k)
    ranked = plot_ranked_lists(
        lambda i: splits.query.load(picks[i]),
        splits.gallery.load,
        list(range(len(picks))),
        found.indices,
        query.labels,
        splits.gallery.labels,
        out / f"ranked_list_{name}.png",
        distances=found.distances,
        title=f"{title}: top-{k} gallery matches",
        class_names=splits.class_names,
    )
    tsne = plot_embedding_map(
        gallery.embeddings,
        gallery.labels,
        out / f"tsne_{name}.png",
        title=f"{title}: unseen classes (t-SNE)",
        max_points=1000,
        class_names=splits.class_names,
    )
    return [ranked, tsne]


def torch_threads() -> int:
    """PyTorch's intra-op thread count now (the demo's results are deterministic for a fixed count)."""
    import torch

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns 0 on success."""
    parser = argparse.ArgumentParser(prog="python -m centrum.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: demo_output)")
    parser.add_argument("--configs", type=Path, default=REPO_ROOT / "configs", help="folder of the demo configs")
    parser.add_argument("--no-install", action="store_true", help=argparse.SUPPRESS)  # kept for old scripts: a no-op
    parser.add_argument(
        "overrides", nargs="*", help="overrides applied to all three configs, e.g. trainer.max_epochs=2"
    )
    args = parser.parse_args(argv)

    from centrum.io import atomic_write_json, atomic_write_text
    from centrum.reports import plot_training_curves
    from centrum.threads import choose_threads, configure_threads
    from centrum.training import load_config, train
    from centrum.training.collapse import EmbeddingSpreadMonitor

    for name in ("lightning.pytorch", "lightning.fabric"):  # keep the demo's output to progress and results
        logging.getLogger(name).setLevel(logging.WARNING)

    start = time.perf_counter()
    ensure_fashion_mnist()
    configs = {name: load_config(args.configs / file, args.overrides) for name, file in DEMO_CONFIGS.items()}
    first = next(iter(configs.values()))
    # one thread per two cores (1 on a 2-core machine): the demo's small CNN gains little from more, and loses
    # many times its time when another process competes for the cores (centrum.threads says why)
    workers = max(c.data.num_workers for c in configs.values())
    configure_threads(workers)
    print(f"CPU threads: {choose_threads(workers).describe()}; set CENTRUM_THREADS to change", flush=True)
    splits = build_dataset(first.data.dataset, first.data.root, **first.data.options)
    print(splits.summary(), flush=True)

    results: dict[str, dict[str, dict]] = {}
    spreads: dict[str, float] = {}
    pictures = []
    for name, config in configs.items():
        print(f"\n=== {name}: {config.name} ===", flush=True)
        monitor = EmbeddingSpreadMonitor(seed=config.seed)
        run = train(config, args.out / config.name, splits=splits, callbacks=[monitor])
        results[name] = run.metrics
        if monitor.history:
            spreads[name] = monitor.history[-1][1]
        plot_training_curves(run.run_dir / "metrics.csv", run.run_dir / "curves.png")
        pictures += save_pictures(run.checkpoint, splits, args.out, config.name, name)

    minutes = (time.perf_counter() - start) / 60
    table = demo_table(results, spreads)
    report = (
        "Fashion-MNIST, trained on classes 0-4, retrieval on the unseen classes 5-9 "
        f"({len(splits.query)} queries, {len(splits.gallery)} gallery images; centroid rows use gallery labels; "
        "embedding spread: mean pairwise cosine distance of 128 training images, near 0 when collapsed).\n\n"
        f"{table}\n\nTotal time: {minutes:.1f} min with {torch_threads()} CPU thread(s).\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "results.md", report)
    atomic_write_json(args.out / "results.json", {**results, "embedding_spread": spreads})
    print("\n" + report)
    print("Pictures: " + ", ".join(str(p) for p in pictures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
