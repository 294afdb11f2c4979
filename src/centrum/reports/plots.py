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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_training_curves(metrics_csv: str | Path, path: str | Path, keys: Sequence[str] | None = None) -> Path:
    """Plot the per-epoch curves of a run's ``metrics.csv`` (Lightning's CSV logger) into one PNG.

    Plots every ``*_epoch`` training term and every ``eval/*`` metric unless ``keys`` names the columns.
    """
    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        raise FileNotFoundError(f"metrics file {metrics_csv} does not exist")
    with metrics_csv.open() as f:
        rows = list(csv.DictReader(f))
    columns = rows[0].keys() if rows else []
    keys = list(keys) if keys else [c for c in columns if c.endswith("_epoch") or c.startswith("eval/")]
    if not keys:
        raise ValueError(f"{metrics_csv} has no per-epoch columns to plot")
    fig, axes = plt.subplots(len(keys), 1, figsize=(6, 1.8 * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys, strict=True):
        points = [(float(r["epoch"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(np.asarray(xs) + 1, ys, marker="o", markersize=3)
        ax.set_ylabel(key.replace("train/", "").replace("_epoch", ""), fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("epoch")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
