"""Matplotlib figures saved to PNG (the Agg backend: no display needed)."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image


def plot_ranked_lists(
    load_query: Callable[[int], Image.Image],
    load_gallery: Callable[[int], Image.Image],
    query_indices: Sequence[int],
    ranked_gallery: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    path: str | Path,
    distances: np.ndarray | None = None,
    title: str | None = None,
    class_names: dict[int, str] | None = None,
) -> Path:
    """Save one row per query: the query image, then its top-K gallery matches framed green (same label)
    or red (other label), each captioned with its label and distance.

    ``ranked_gallery[i]`` holds the gallery indices ranked for ``query_indices[i]``; labels index with those.
    """
    ranked_gallery = np.asarray(ranked_gallery)
    rows, k = len(query_indices), ranked_gallery.shape[1]
    if rows == 0:
        raise ValueError("no query to draw: query_indices is empty")
    fig, axes = plt.subplots(rows, k + 1, figsize=(1.4 * (k + 1), 1.6 * rows), squeeze=False)

    def name(label: int) -> str:
        return class_names.get(int(label), str(label)) if class_names else str(int(label))

    for r, q in enumerate(query_indices):
        ax = axes[r, 0]
        ax.imshow(load_query(int(q)))
        ax.set_title(f"query\n{name(query_labels[q])}", fontsize=7)
        for spine in ax.spines.values():
            spine.set_edgecolor("black")
            spine.set_linewidth(2)
        for j, g in enumerate(ranked_gallery[r]):
            ax = axes[r, j + 1]
            ax.imshow(load_gallery(int(g)))
            hit = gallery_labels[g] == query_labels[q]
            caption = name(gallery_labels[g])
            if distances is not None:
                caption += f"\n{distances[r, j]:.2f}"
            ax.set_title(caption, fontsize=7, color="green" if hit else "red")
            for spine in ax.spines.values():
                spine.set_edgecolor("green" if hit else "red")
                spine.set_linewidth(3)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    from centrum.io import save_figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def _curve_title(key: str) -> str:
    """``train/loss_epoch`` -> "training loss"; ``eval/products/mAP`` -> "products mAP (test)"."""
    if key.startswith("eval/"):
        return key.removeprefix("eval/").replace("/", " ") + " (test)"
    name = key.removeprefix("train/").removesuffix("_epoch").replace("_", " ")
    return "learning rate" if name == "lr" else f"training {name}"


def plot_training_curves(metrics_csv: str | Path, path: str | Path, keys: Sequence[str] | None = None) -> Path:
    """Plot the per-epoch curves of a run's ``metrics.csv`` (Lightning's CSV logger) into one PNG.

    One titled panel per curve in a grid: every ``*_epoch`` training term, the learning rate and every
    ``eval/*`` metric unless ``keys`` names the columns; a column whose value never changes (a counter such
    as ``num_queries``) gets no panel. The x axis is the epoch (1-based, integer ticks). Written atomically.
    """
    from centrum.io import save_figure

    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        raise FileNotFoundError(f"metrics file {metrics_csv} does not exist")
    with metrics_csv.open() as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0].keys()) if rows else []
    if keys:
        chosen = list(keys)
    else:
        chosen = [c for c in columns if c.endswith("_epoch") or c.startswith("eval/") or c == "train/lr"]

        def reading_order(column: str) -> tuple:
            # the training loss first, its terms, the learning rate, then each protocol's metrics, mAP first
            if column.startswith("eval/"):
                protocol, _, metric = column.removeprefix("eval/").rpartition("/")
                return (3, protocol, metric != "mAP", metric)
            return (0 if column == "train/loss_epoch" else 2 if column == "train/lr" else 1, column)

        chosen.sort(key=reading_order)
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for key in chosen:
        points = sorted(
            {float(r["epoch"]): float(r[key]) for r in rows if r.get(key) not in (None, "") and r.get("epoch")}.items()
        )
        if not points:
            continue
        values = [v for _, v in points]
        if not keys and len(values) > 1 and max(values) == min(values):
            continue  # a constant (query counts, a fixed rate): nothing to watch
        curves[key] = ([e + 1 for e, _ in points], values)
    if not curves:
        raise ValueError(f"{metrics_csv} has no per-epoch columns to plot")
    n = len(curves)
    cols = min(3, n)
    rows_n = -(-n // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 2.9 * rows_n), squeeze=False)
    from matplotlib.ticker import MaxNLocator

    for ax, (key, (xs, ys)) in zip(axes.flat, curves.items(), strict=False):
        ax.plot(xs, ys, marker="o", markersize=3)
        ax.set_title(_curve_title(key), fontsize=10)
        ax.set_xlabel("epoch", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    out = save_figure(fig, path, dpi=110)
    plt.close(fig)
    return out


def plot_embedding_map(
    embeddings: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    title: str | None = None,
    seed: int = 0,
    max_points: int = 2000,
    class_names: dict[int, str] | None = None,
) -> Path:
    """A 2-D t-SNE map of embeddings coloured by label (the Symm paper's embedding-space picture)."""
    from sklearn.manifold import TSNE

    embeddings, labels = np.asarray(embeddings), np.asarray(labels)
    if len(embeddings) < 5:
        raise ValueError(f"a t-SNE map needs at least 5 embeddings, got {len(embeddings)}")
    if len(embeddings) > max_points:
        keep = np.random.default_rng(seed).choice(len(embeddings), max_points, replace=False)
        embeddings, labels = embeddings[keep], labels[keep]
    perplexity = min(30.0, (len(embeddings) - 1) / 3)
    xy = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(embeddings)
    fig, ax = plt.subplots(figsize=(5, 5))
    scatter = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=6)
    classes = np.unique(labels)
    if len(classes) <= 10:  # one legend entry per class; beyond ten a legend says nothing
        handles, _ = scatter.legend_elements(num=list(classes))
        names = [class_names.get(int(c), str(c)) if class_names else str(c) for c in classes]
        ax.legend(handles, names, fontsize=7, loc="best", markerscale=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    from centrum.io import save_figure

    path = Path(path)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
