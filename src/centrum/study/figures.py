"""The study report's pictures: each drawn from the run folders, with a short title, labelled axes, legends and
colour keys outside the data, and a caption saying what to look for.

Training curves of all arms, Symm's share of synthetic negatives, the alpha x beta heat-map and the top-k curve
(when the grid has them), t-SNE maps of test embeddings over training, ranked lists (a few arms), per-image vs
centroid retrieval, and time and memory per training step.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from centrum.io import save_figure
from centrum.study.results import RunData, StudyResults
from centrum.study.spec import Cell
from centrum.study.stats import mean_std

#: metrics.csv columns holding Symm's share of synthetic negatives, whatever the loss calls it
SYNTHETIC_COLUMN = re.compile(r"synthetic.*(ratio|share|fraction)", re.IGNORECASE)
#: ranked-list figures shown in the report (each arm's looks alike at this scale; the rest stay in the run folders)
RANKED_SHOWN = 2


@dataclass
class Picture:
    """A saved figure and what the report says about it."""

    path: Path
    title: str
    caption: str
    #: "ranked": a ranked-list strip, shown narrower than the page
    kind: str = ""


def _series(rows: list[dict[str, str]], x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(float(r[x]), float(r[y])) for r in rows if r.get(y) not in (None, "") and r.get(x) not in (None, "")]
    if not pts:
        return np.zeros(0), np.zeros(0)
    xs, ys = zip(*pts, strict=True)
    return np.asarray(xs), np.asarray(ys)


def _mean_curve(runs: list[RunData], x: str, y: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over seeds of ``y`` against ``x`` at the x values every run has."""
    curves = [dict(zip(*_series(r.rows, x, y), strict=True)) for r in runs]
    curves = [c for c in curves if c]
    if not curves:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    common = sorted(set.intersection(*(set(c) for c in curves)))
    values = np.asarray([[c[k] for k in common] for c in curves])
    return np.asarray(common), values.mean(0), values.std(0, ddof=1) if len(curves) > 1 else np.zeros(len(common))


def _arms(results: StudyResults) -> list[tuple[Cell, list[RunData]]]:
    return [(c, results.runs[c.key]) for c in results.cells if results.runs.get(c.key)]


def _colors(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _legend(fig: Any, ax: Any, n: int) -> None:
    """The arms' key below the axes, never over the lines (the saved picture grows to hold it)."""
    if n:
        handles, labels = ax.get_legend_handles_labels()
        fig.legend(
            handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(n, 3), frameon=False
        )


def _finish(fig: Any, path: Path, title: str, caption: str, dpi: int = 100) -> Picture:
    """Lay out, save (atomically, cropped to what is drawn, legends below the axes included) and close ``fig``;
    the picture with its title and one-line caption."""
    fig.tight_layout()
    save_figure(fig, path, dpi=dpi, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return Picture(path, title, caption)


def _marker_style(points: int) -> dict[str, Any]:
    """Markers big enough to see when a curve has few points (one evaluated epoch draws no line at all)."""
    return {"marker": "o", "ms": 6 if points <= 3 else 3}


def _metric_column(rows: list[dict[str, str]], metrics: list[str]) -> tuple[str, str] | None:
    """The first of ``metrics`` (protocol/metric) that a run's metrics.csv logs: (metric, column)."""
    columns = {c.lower(): c for c in (rows[0] if rows else {})}
    for metric in metrics:
        column = columns.get(f"eval/{metric}".lower())
        if column and any(r.get(column) not in (None, "") for r in rows):
            return metric, column
    return None


def figure_curves(results: StudyResults, path: Path) -> Picture | None:
    """Training loss per step and the main metric per evaluated epoch, every arm on shared axes (an arm
    whose data has no main metric, e.g. another dataset's protocol, shows the first compared metric it has)."""
    arms = _arms(results)
    if not arms:
        return None
    candidates = [results.study.metric] + [c.metric for c in results.study.comparisons]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    positive = True
    evaluated = 0
    shown: set[str] = set()
    for (cell, runs), color in zip(arms, _colors(len(arms)), strict=True):
        xs, mean, std = _mean_curve(runs, "step", "train/loss_step")
        if len(xs):
            style = _marker_style(len(xs)) if len(xs) <= 10 else {}
            ax_loss.plot(xs, mean, color=color, label=cell.label, lw=1, **style)
            ax_loss.fill_between(xs, mean - std, mean + std, color=color, alpha=0.15)
            positive &= bool((mean > 0).all())
        found = _metric_column(runs[0].rows, candidates)
        if found is None:
            continue
        metric, column = found
        xs, mean, std = _mean_curve(runs, "epoch", column)
        if len(xs):
            shown.add(metric)
            label = cell.label if metric == results.study.metric else f"{cell.label} ({metric})"
            ax_metric.errorbar(xs + 1, mean, yerr=std, color=color, capsize=3, label=label, **_marker_style(len(xs)))
            evaluated = max(evaluated, len(xs))
    if positive:
        ax_loss.set_yscale("log")
    ax_loss.set(title="training loss (mean over seeds; band: std)", xlabel="training step", ylabel="loss")
    metric_name = ", ".join(dict.fromkeys(m for m in candidates if m in shown)) or results.study.metric
    ax_metric.set(title="test metric while training", xlabel="epoch", ylabel=metric_name)
    ax_metric.xaxis.set_major_locator(MaxNLocator(integer=True))
    if evaluated == 1:
        ax_metric.text(
            0.5, 0.04, "one evaluated epoch: a point, not a curve", transform=ax_metric.transAxes,
            ha="center", fontsize=8, color="#555",
        )  # fmt: skip
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
    _legend(fig, ax_loss if ax_loss.lines else ax_metric, len(arms))
    return _finish(
        fig,
        path,
        "Training curves of all arms",
        "Look for arms whose test metric is still rising at the last epoch (under-trained at this budget) and for "
        "losses that diverge; losses of different kinds are not comparable in level, only in shape.",
    )


def synthetic_column(rows: list[dict[str, str]]) -> str | None:
    """The metrics.csv column with Symm's synthetic-negative share (per step preferred), or None."""
    columns = [c for c in (rows[0] if rows else {}) if SYNTHETIC_COLUMN.search(c)]
    steps = [c for c in columns if c.endswith("_step")]
    return (steps or columns or [None])[0]


def figure_synthetic(results: StudyResults, path: Path) -> Picture | None:
    """Share of the chosen negatives that were synthetic points, per step, for every arm that logs it."""
    arms = []
    for cell, runs in _arms(results):
        column = synthetic_column(runs[0].rows)
        if column:
            xs, mean, std = _mean_curve(runs, "step", column)
            if len(xs):
                arms.append((cell, xs, mean, std))
    if not arms:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for (cell, xs, mean, std), color in zip(arms, _colors(len(arms)), strict=True):
        ax.plot(xs, mean, color=color, label=cell.label, lw=1)
        ax.fill_between(xs, np.clip(mean - std, 0, 1), np.clip(mean + std, 0, 1), color=color, alpha=0.15)
    ax.set(
        title="synthetic share of chosen negatives",
        xlabel="training step",
        ylabel="synthetic share of negatives",
        ylim=(0, 1),
    )
    ax.grid(alpha=0.3)
    _legend(fig, ax, len(arms))
    return _finish(
        fig,
        path,
        "Symm's share of synthetic negatives over training",
        "The paper reports synthetic points being chosen as the hardest negatives for a large share of anchors "
        "(its 'ratio of feature points'); a share near 0 means Symm changes nothing, near 1 that it replaces "
        "almost every original negative.",
    )


def _axis_cells(results: StudyResults, *suffixes: str) -> list[tuple[Cell, list[str]]]:
    out = []
    for cell in results.cells:
        found = []
        for suffix in suffixes:
            value = next((v for a, v in cell.settings if a.split(".")[-1] == suffix), None)
            found.append(value)
        if all(v is not None for v in found):
            out.append((cell, found))
    return out


def _cell_mean(results: StudyResults, cell: Cell, metric: str) -> tuple[float, float]:
    return mean_std(list(results.values(cell, metric).values()))


def figure_heatmap(results: StudyResults, path: Path) -> Picture | None:
    """The main metric (mean over seeds) over the alpha x beta grid of Symm."""
    cells = _axis_cells(results, "alpha", "beta")
    if not cells:
        return None
    alphas = sorted({float(a) for _, (a, _) in cells})
    betas = sorted({float(b) for _, (_, b) in cells})
    grid = np.full((len(alphas), len(betas)), np.nan)
    for cell, (a, b) in cells:
        grid[alphas.index(float(a)), betas.index(float(b))] = _cell_mean(results, cell, results.study.metric)[0]
    if np.isnan(grid).all():
        return None
    fig, ax = plt.subplots(figsize=(5, 4))
    image = ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
    for i in range(len(alphas)):
        for j in range(len(betas)):
            if not math.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", color="w", fontsize=8)
    ax.set_xticks(range(len(betas)), [f"{b:g}" for b in betas])
    ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set(title=f"{results.study.metric} over alpha x beta", xlabel="beta", ylabel="alpha")
    fig.colorbar(image, ax=ax, label=results.study.metric)
    return _finish(
        fig,
        path,
        "Symm's alpha x beta ablation",
        "The paper finds alpha = 2, beta = 1 (a true reflection) best; look at whether differences across the "
        "grid exceed the seed-to-seed spread in the table.",
    )


def figure_topk(results: StudyResults, path: Path) -> Picture | None:
    """The main metric (mean +- std over seeds) against Symm's top-k hard negatives."""
    cells = _axis_cells(results, "top_k")
    if not cells:
        return None
    points = sorted((int(k), *_cell_mean(results, c, results.study.metric)) for c, (k,) in cells)
    points = [p for p in points if not math.isnan(p[1])]
    if not points:
        return None
    ks, means, stds = zip(*points, strict=True)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.errorbar(ks, means, yerr=stds, marker="o", capsize=3)
    ax.set_xticks(ks)
    ax.set(
        title=f"{results.study.metric} vs Symm's top-k",
        xlabel="top-k hardest negatives per class",
        ylabel=results.study.metric,
    )
    ax.grid(alpha=0.3)
    return _finish(
        fig,
        path,
        "Symm's hardness ablation (top-k)",
        "The paper finds k = 1 (only the hardest) best; a flat curve within the error bars means the choice does "
        "not matter at this scale.",
    )


def figure_tsne(results: StudyResults, path: Path, max_arms: int = 10) -> Picture | None:
    """t-SNE maps of the snapshot subset's test embeddings: one row per arm (first seed), one column per epoch."""
    from sklearn.manifold import TSNE

    rows = []
    for cell, runs in _arms(results)[:max_arms]:
        snaps = sorted((runs[0].run_dir / "snapshots").glob("epoch-*.npz"))
        if snaps:
            rows.append((cell, runs[0].seed, snaps))
    if not rows:
        return None
    cols = max(len(s) for _, _, s in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.6 * cols, 2.5 * len(rows)), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    key: dict[int, str] = {}  # class id -> name, for the colour key shared by every panel
    for r, (cell, seed, snaps) in enumerate(rows):
        for c, snap in enumerate(snaps):
            with np.load(snap) as data:
                emb, labels, epoch = data["embeddings"], data["labels"], int(data["epoch"])
                if "class_ids" in data:
                    key.update({int(i): str(n) for i, n in zip(data["class_ids"], data["class_names"], strict=True)})
                if "gallery_embeddings" in data:  # a re-id protocol: the subset's gallery images belong in the map
                    emb = np.concatenate([emb, data["gallery_embeddings"]])
                    labels = np.concatenate([labels, data["gallery_labels"]])
            for label in np.unique(labels):
                key.setdefault(int(label), f"class {int(label)}")
            ax = axes[r, c]
            if len(emb) >= 5:
                perplexity = min(30.0, (len(emb) - 1) / 3)
                xy = TSNE(n_components=2, perplexity=perplexity, random_state=0, init="pca").fit_transform(emb)
                ax.scatter(xy[:, 0], xy[:, 1], c=[_class_color(sorted(key), int(v)) for v in labels], s=5)
            ax.set_title(f"epoch {epoch}", fontsize=8)
            ax.set_xlabel("t-SNE 1", fontsize=7)
            if c == 0:
                ax.set_ylabel(f"{cell.label.replace(', ', chr(10))}\n(seed {seed})  t-SNE 2", fontsize=7)
    ids = sorted(key)
    handles = [
        plt.Line2D([], [], ls="", marker="o", ms=5, color=_class_color(ids, i), label=_short(key[i])) for i in ids
    ]
    fig.legend(
        handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(ids), 5), fontsize=7,
        frameon=False, title="colour = test class (unseen in training)", title_fontsize=7,
    )  # fmt: skip
    return _finish(
        fig,
        path,
        "Test embeddings over training (t-SNE)",
        "Unseen classes should separate into tighter, more distinct clusters from left to right; compare the "
        "rows at the last epoch for the arms' difference. Embedded after training from saved snapshots of a "
        "fixed subset of test classes.",
        dpi=90,
    )


def _class_color(ids: list[int], label: int) -> Any:
    cmap = plt.get_cmap("tab10" if len(ids) <= 10 else "tab20")
    return cmap(ids.index(label) % cmap.N) if label in ids else "grey"


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def figure_centroids(results: StudyResults, path: Path) -> Picture | None:
    """Per-image vs centroid retrieval (protocol P vs P-centroids, same metric) of every arm that has both."""
    bars = []
    for cell, _ in _arms(results):
        for name in results.metric_names():
            protocol, metric = name.split("/", 1)
            twin = f"{protocol}-centroids/{metric}"
            if protocol.endswith("-centroids") or twin not in results.metric_names():
                continue
            if metric.lower() not in ("map", "map@r", "rank-1", "acc@1", "recall@1"):
                continue
            if results.values(cell, name) and results.values(cell, twin):  # this cell's dataset has both
                bars.append((cell, name, twin))
    if not bars:
        return None
    labels = [f"{c.label.replace(', ', chr(10))}\n{n.split('/', 1)[1]}" for c, n, _ in bars]
    per_image = [_cell_mean(results, c, n) for c, n, _ in bars]
    centroid = [_cell_mean(results, c, t) for c, _, t in bars]
    x = np.arange(len(bars))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(bars)), 4.5))
    ax.bar(x - 0.2, [m for m, _ in per_image], 0.4, yerr=[s for _, s in per_image], capsize=3, label="per image")
    ax.bar(x + 0.2, [m for m, _ in centroid], 0.4, yerr=[s for _, s in centroid], capsize=3, label="class centroids")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set(xlabel="arm and metric", ylabel="metric value (mean ± std over seeds)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _finish(
        fig,
        path,
        "Per-image vs centroid retrieval",
        "The CTL paper reports centroid retrieval at least as good as per-image retrieval for the CTL model; "
        "compare each arm's two bars, and the CTL arm's gap with the baseline's.",
    )


def figure_step_cost(results: StudyResults, path: Path) -> Picture | None:
    """Median time and working memory of one training step per arm (mean over seeds)."""
    arms = []
    for cell, runs in _arms(results):
        costs = [r.step_cost for r in runs if r.step_cost and r.step_cost.get("median_step_seconds") is not None]
        if costs:
            t = mean_std([1000 * c["median_step_seconds"] for c in costs])
            mem = [c["median_step_memory_bytes"] for c in costs if c.get("median_step_memory_bytes") is not None]
            m = mean_std([b / 2**20 for b in mem]) if mem else (math.nan, math.nan)
            arms.append((cell, t, m, costs[0].get("memory_measure", "")))
    if not arms:
        return None
    loads = [
        r.step_cost["load_average"]
        for _, runs in _arms(results)
        for r in runs
        if r.step_cost and r.step_cost.get("load_average") is not None
    ]
    cores = next((r.step_cost.get("cpu_count") for _, runs in _arms(results) for r in runs if r.step_cost), None)
    load_note = ""
    # the study's own parallel runs keep the load near the core count; only a clearly higher load means that
    # other processes competed for the cores while the steps were timed
    if loads and cores and float(np.median(loads)) > 1.25 * cores:
        load_note = (
            f" Warning: the machine was busy (median load {float(np.median(loads)):.1f} on {cores} cores at the end "
            "of the runs, this study's own runs included), so these times measure other processes as much as the step."
        )
    with_symm = any(c.setting("symm") == "true" for c, *_ in arms)
    # on the CPU the measure is the rise of the resident high-water mark within a step: once the allocator
    # reuses freed memory, a small model's step raises it by nothing, and a panel of zeros would say nothing
    show_memory = any(abs(m[0]) >= 0.5 for _, _, m, _ in arms if not math.isnan(m[0]))
    x = np.arange(len(arms))
    colors = ["tab:orange" if c.setting("symm") == "true" else "tab:blue" for c, *_ in arms]
    panels = 2 if show_memory else 1
    width = min(max(4.5, 0.8 * len(arms)), 10.0)
    # many arms: the panels one above the other, so that the picture stays readable at page width
    grid = (panels, 1) if len(arms) > 6 else (1, panels)
    fig, axes = plt.subplots(*grid, figsize=(width * grid[1], 4.0 * grid[0]), squeeze=False)
    axes = axes.reshape(1, -1)
    ax_t = axes[0][0]
    ax_t.bar(x, [t[0] for _, t, _, _ in arms], yerr=[t[1] for _, t, _, _ in arms], color=colors, capsize=3)
    xlabel = "arm (orange: with Symm)" if with_symm else "arm"
    ax_t.set(title="time per training step (median)", xlabel=xlabel, ylabel="milliseconds")
    if show_memory:
        ax_m = axes[0][1]
        ax_m.bar(x, [m[0] for _, _, m, _ in arms], yerr=[m[1] for _, _, m, _ in arms], color=colors, capsize=3)
        ax_m.set(title="working memory per step (median)", xlabel=xlabel, ylabel="MiB")
    names = [c.label.replace(", ", "\n") for c, *_ in arms]
    for ax in axes[0]:
        ax.set_xticks(x, names, fontsize=7, rotation=30, ha="right")
        ax.grid(axis="y", alpha=0.3)
    if with_symm:
        what = (
            "Symm's cost is the gap between each loss's orange and blue bars; "
            "the paper claims it is small next to the backbone's."
        )
    else:
        what = "The gap between arms is the cost of their objectives next to the shared backbone step."
    measure = arms[0][3]
    memory_note = (
        f" Memory measured as: {measure}."
        if show_memory
        else f" Working memory is not drawn: no step raised it by 0.5 MiB or more ({measure}; freed memory is reused)."
    )
    return _finish(fig, path, "Time and memory per training step", what + memory_note + load_note)


def ranked_pictures(results: StudyResults, shown: int = RANKED_SHOWN) -> list[Picture]:
    """The ranked lists the first seed of the first ``shown`` arms drew after training; the last caption names
    where the other arms' pictures are (at this scale they look alike, and ten of them are pages of scrolling)."""
    found = []
    for cell, runs in _arms(results):
        path = runs[0].run_dir / "ranked_lists.png"
        if path.is_file():
            found.append((cell, runs[0].seed, path))
    pictures = [
        Picture(
            path,
            f"Ranked lists: {cell.label} (seed {seed})",
            "Green titles share the query's class, red ones do not; each image is captioned with its class and "
            "cosine distance to the query. Look for the classes each arm confuses.",
            kind="ranked",
        )
        for cell, seed, path in found[:shown]
    ]
    rest = found[shown:]
    if rest:
        where = ", ".join(str(p.relative_to(results.out_dir)) if p.is_relative_to(results.out_dir) else str(p)
                          for _, _, p in rest)  # fmt: skip
        last = pictures[-1]
        pictures[-1] = Picture(
            last.path,
            last.title,
            f"{last.caption} Shown for {len(pictures)} of {len(found)} arms (at this scale they look alike); the "
            f"others' are in the run folders: {where}.",
            kind="ranked",
        )
    return pictures


FIGURES: dict[str, tuple[str, Callable[[StudyResults, Path], Picture | None]]] = {
    "curves": ("study_curves.png", figure_curves),
    "synthetic_ratio": ("study_synthetic_share.png", figure_synthetic),
    "heatmap": ("study_alpha_beta.png", figure_heatmap),
    "topk": ("study_topk.png", figure_topk),
    "tsne": ("study_tsne.png", figure_tsne),
    "centroids": ("study_centroids.png", figure_centroids),
    "step_cost": ("study_step_cost.png", figure_step_cost),
}
