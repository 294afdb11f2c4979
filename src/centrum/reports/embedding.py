"""A 2-D t-SNE map of embeddings coloured by class (the Symmetrical Synthesis paper's picture of the space)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

MAX_KEYED_CLASSES = 20


def embedding_map_figure(
    embeddings: np.ndarray,
    labels: np.ndarray,
    title: str | None = None,
    seed: int = 0,
    max_points: int = 2000,
    class_names: dict[int, str] | None = None,
) -> Figure:
    """The figure of :func:`plot_embedding_map`: t-SNE of at most ``max_points`` embeddings (a seeded sample),
    one colour per class with a key beside the map for up to 20 classes."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    embeddings, labels = np.asarray(embeddings), np.asarray(labels)
    if len(embeddings) < 5:
        raise ValueError(f"a t-SNE map needs at least 5 embeddings, got {len(embeddings)}")
    if len(embeddings) != len(labels):
        raise ValueError(f"{len(embeddings)} embeddings but {len(labels)} labels: one label per embedding")
    if len(embeddings) > max_points:
        keep = np.random.default_rng(seed).choice(len(embeddings), max_points, replace=False)
        embeddings, labels = embeddings[keep], labels[keep]
    perplexity = min(30.0, (len(embeddings) - 1) / 3)
    # one OpenMP thread: beside torch's own OpenMP runtime, sklearn's threads spin against torch's and a
    # 40-point map took 12 s instead of 0.4 s (measured on 2 cores); at <= 2000 points one thread is enough
    with threadpool_limits(limits=1, user_api="openmp"):
        xy = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(embeddings)
    classes = np.unique(labels)
    keyed = len(classes) <= MAX_KEYED_CLASSES
    fig, ax = plt.subplots(figsize=(6.6 if keyed else 5.2, 5.2), layout="constrained")
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, c in enumerate(classes):
        mask = labels == c
        name = class_names.get(int(c), str(c)) if class_names else str(c)
        ax.scatter(xy[mask, 0], xy[mask, 1], s=7, color=cmap(i % cmap.N), label=name)
    if keyed:  # the key beside the map, never over the points
        ax.legend(
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            markerscale=1.6,
            title="class",
            title_fontsize=8,
            frameon=False,
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("t-SNE 1", fontsize=8)
    ax.set_ylabel("t-SNE 2", fontsize=8)
    note = "" if keyed else f" ({len(classes)} classes; colours repeat)"
    ax.set_title((title or "embeddings, t-SNE") + note, fontsize=10, wrap=True)
    return fig


def plot_embedding_map(
    embeddings: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    title: str | None = None,
    seed: int = 0,
    max_points: int = 2000,
    class_names: dict[int, str] | None = None,
) -> Path:
    """Save a 2-D t-SNE map of embeddings coloured by label (the Symm paper's embedding-space picture).
    Written atomically; returns ``path``."""
    from centrum.io import save_figure

    fig = embedding_map_figure(embeddings, labels, title, seed, max_points, class_names)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        return save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)
