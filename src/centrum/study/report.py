"""The study report: ``report.md`` and a self-contained ``report.html`` (images embedded as base64).

Tables: every metric of every cell (mean +- std over seeds) and every paired comparison (mean difference, 95 %
t-interval, verdict). Pictures (each with a title, labelled axes and a caption saying what to look for): training
curves of all arms, Symm's share of synthetic negatives, the alpha x beta heat-map and the top-k curve (when the
grid has them), t-SNE maps of test embeddings over training, ranked lists, per-image vs centroid retrieval, and
time and memory per training step. Everything is read back from the run folders, so a report can be redrawn
without training (``centrum study ... --report-only``).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from centrum.io import atomic_write_text, save_figure
from centrum.study.runner import PlannedRun, plan_runs
from centrum.study.spec import Cell, Comparison, Study
from centrum.study.stats import PairedResult, mean_std, paired_comparison

#: metrics.csv columns holding Symm's share of synthetic negatives, whatever the loss calls it
SYNTHETIC_COLUMN = re.compile(r"synthetic.*(ratio|share|fraction)", re.IGNORECASE)


@dataclass
class RunData:
    """What a finished run left: final metrics (``protocol/metric``), its metrics.csv rows and step cost."""

    cell: Cell
    seed: int
    run_dir: Path
    metrics: dict[str, float]
    rows: list[dict[str, str]]
    step_cost: dict[str, Any] | None


@dataclass
class Picture:
    """A saved figure and what the report says about it."""

    path: Path
    title: str
    caption: str


@dataclass
class StudyResults:
    """The finished runs of a study grouped by cell, plus the paired comparisons judged from them."""

    study: Study
    out_dir: Path
    runs: dict[str, list[RunData]]
    cells: list[Cell]
    comparisons: list[tuple[Comparison, str, PairedResult]] = field(default_factory=list)

    def values(self, cell: Cell, metric: str) -> dict[int, float]:
        """``{seed: final value of metric}`` of a cell's finished runs (the name matched exactly, else ignoring
        case: ``products/map`` finds ``products/mAP``)."""
        out = {}
        for r in self.runs.get(cell.key, []):
            key = metric if metric in r.metrics else next((k for k in r.metrics if k.lower() == metric.lower()), None)
            if key is not None:
                out[r.seed] = r.metrics[key]
        return out

    def metric_names(self) -> list[str]:
        """Every final metric seen, the study's main metric first."""
        names = dict.fromkeys([self.study.metric])
        for runs in self.runs.values():
            for r in runs:
                names.update(dict.fromkeys(r.metrics))
        present = [n for n in names if any(n in r.metrics for runs in self.runs.values() for r in runs)]
        main = next((n for n in present if n.lower() == self.study.metric.lower()), None)
        # counts (num_queries, ...) are the same for every arm and say nothing about quality
        rest = [n for n in present if n != main and not n.split("/", 1)[1].startswith("num_")]
        return ([main] if main else []) + rest


def _flatten(metrics: dict[str, dict]) -> dict[str, float]:
    return {
        f"{p}/{m}": float(v)
        for p, values in metrics.items()
        for m, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _read_run(run: PlannedRun) -> RunData:
    results = json.loads((run.run_dir / "results.json").read_text())
    rows: list[dict[str, str]] = []
    if (run.run_dir / "metrics.csv").is_file():
        with (run.run_dir / "metrics.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
    cost_file = run.run_dir / "step_cost.json"
    cost = json.loads(cost_file.read_text()) if cost_file.is_file() else None
    return RunData(run.cell, run.seed, run.run_dir, _flatten(results.get("metrics", {})), rows, cost)


def judge(results: StudyResults) -> list[tuple[Comparison, str, PairedResult]]:
    """Every comparison on every pair of cells that differ only in the compared axis, paired by seed."""
    judged = []
    for comp in results.study.comparisons:
        for cell in results.cells:
            if cell.setting(comp.vary) != comp.base:
                continue
            others = [(a, v) for a, v in cell.settings if a != comp.vary]
            for partner in results.cells:
                if partner.setting(comp.vary) != comp.treatment:
                    continue
                if [(a, v) for a, v in partner.settings if a != comp.vary] != others:
                    continue
                context = ", ".join(f"{a.split('.')[-1]}={v}" for a, v in others) or "all"
                base_values, treatment_values = results.values(cell, comp.metric), results.values(partner, comp.metric)
                if not base_values and not treatment_values and results.runs.get(cell.key):
                    continue  # a metric these cells' protocol does not have (e.g. another dataset's)
                paired = paired_comparison(
                    base_values,
                    treatment_values,
                    metric=comp.metric,
                    min_gain=comp.min_gain,
                    higher_is_better=comp.higher_is_better,
                )
                judged.append((comp, context, paired))
    return judged


def collect(study: Study, out_dir: str | Path) -> StudyResults:
    """Read every finished run of ``study`` under ``out_dir`` and judge the comparisons."""
    out_dir = Path(out_dir)
    runs: dict[str, list[RunData]] = {}
    for run in plan_runs(study, out_dir):
        if run.finished:
            runs.setdefault(run.cell.key, []).append(_read_run(run))
    results = StudyResults(study, out_dir, runs, study.cells())
    results.comparisons = judge(results)
    return results


# ---------------------------------------------------------------------------------------------------- figures


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


def _legend(ax, n: int) -> None:
    if n:
        ax.legend(fontsize=6, loc="best", ncol=1 if n <= 6 else 2)


def _finish(fig: Any, path: Path, title: str, caption: str) -> Picture:
    """Lay out, save (atomically) and close ``fig``; the picture with its title and one-line caption."""
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return Picture(path, title, caption)


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
    shown: set[str] = set()
    for (cell, runs), color in zip(arms, _colors(len(arms)), strict=True):
        xs, mean, std = _mean_curve(runs, "step", "train/loss_step")
        if len(xs):
            ax_loss.plot(xs, mean, color=color, label=cell.label, lw=1)
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
            ax_metric.errorbar(xs + 1, mean, yerr=std, color=color, marker="o", ms=3, capsize=2, label=label)
    if positive:
        ax_loss.set_yscale("log")
    ax_loss.set(title="training loss (mean over seeds, band = std)", xlabel="training step", ylabel="loss")
    metric_name = ", ".join(m for m in candidates if m in shown) or results.study.metric
    ax_metric.set(title=f"{metric_name} on the test split while training", xlabel="epoch", ylabel=metric_name)
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
    _legend(ax_loss, len(arms))
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
        title="Symm: share of chosen negatives that are synthetic",
        xlabel="training step",
        ylabel="synthetic share of negatives",
        ylim=(0, 1),
    )
    ax.grid(alpha=0.3)
    _legend(ax, len(arms))
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
    for r, (cell, seed, snaps) in enumerate(rows):
        for c, snap in enumerate(snaps):
            with np.load(snap) as data:
                emb, labels, epoch = data["embeddings"], data["labels"], int(data["epoch"])
                if "gallery_embeddings" in data:  # a re-id protocol: the subset's gallery images belong in the map
                    emb = np.concatenate([emb, data["gallery_embeddings"]])
                    labels = np.concatenate([labels, data["gallery_labels"]])
            ax = axes[r, c]
            if len(emb) >= 5:
                perplexity = min(30.0, (len(emb) - 1) / 3)
                xy = TSNE(n_components=2, perplexity=perplexity, random_state=0, init="pca").fit_transform(emb)
                _, codes = np.unique(labels, return_inverse=True)
                ax.scatter(xy[:, 0], xy[:, 1], c=codes, cmap="tab10", s=5)
            ax.set_title(f"epoch {epoch}", fontsize=8)
            ax.set_xlabel("t-SNE 1", fontsize=7)
            if c == 0:
                ax.set_ylabel(f"{cell.label.replace(', ', chr(10))}\n(seed {seed})  t-SNE 2", fontsize=7)
    fig.suptitle("t-SNE of test embeddings (unseen classes, colour = class) over training", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    plt.close(fig)
    return Picture(
        path,
        "Test embeddings over training (t-SNE)",
        "Unseen classes should separate into tighter, more distinct clusters from left to right; compare the "
        "rows at the last epoch for the arms' difference. Embedded after training from saved snapshots of a "
        "fixed subset of test classes.",
    )


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
    ax.set_xticks(x, labels, fontsize=6)
    ax.set(title="Per-image vs centroid retrieval", xlabel="arm and metric", ylabel="metric value (mean +- std)")
    ax.legend(fontsize=8)
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


def ranked_pictures(results: StudyResults) -> list[Picture]:
    """The ranked lists each arm's first seed drew after training."""
    pictures = []
    for cell, runs in _arms(results):
        path = runs[0].run_dir / "ranked_lists.png"
        if path.is_file():
            pictures.append(
                Picture(
                    path,
                    f"Ranked lists: {cell.label} (seed {runs[0].seed})",
                    "Green frames share the query's class, red ones do not; look for the classes each arm confuses.",
                )
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


# ----------------------------------------------------------------------------------------------------- tables


def _fmt(mean: float, std: float | None = None) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def metrics_table(results: StudyResults) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per cell, its number of finished seeds and every metric's mean ± std."""
    names = results.metric_names()
    header = ["cell", "seeds", *names]
    rows = []
    for cell in results.cells:
        runs = results.runs.get(cell.key, [])
        row = [cell.label, str(len(runs))]
        for name in names:
            vals = [r.metrics[name] for r in runs if name in r.metrics]
            row.append(_fmt(*mean_std(vals)) if vals else "–")
        rows.append(row)
    return header, rows


def comparisons_table(results: StudyResults) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per judged pair, the claim, the means, the mean paired difference, its 95 % interval
    and the verdict."""
    header = ["claim", "where", "metric", "base", "treatment", "mean diff", "95 % CI", "seeds", "verdict"]
    rows = []
    for comp, context, res in results.comparisons:
        claim = comp.claim or f"{comp.vary}: {comp.treatment} beats {comp.base}"
        ci = "–" if math.isnan(res.low) else f"[{res.low:+.4f}, {res.high:+.4f}]"
        diff = "–" if math.isnan(res.mean) else f"{res.mean:+.4f}"
        rows.append(
            [
                claim,
                context,
                comp.metric,
                _fmt(res.base_mean),
                _fmt(res.treatment_mean),
                diff,
                ci,
                str(len(res.seeds)),
                res.verdict,
            ]
        )
    return header, rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="{_verdict_class(c)}">{html.escape(c)}</td>' for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _verdict_class(cell: str) -> str:
    return {"reproduced": "ok", "not reproduced": "bad", "inconclusive": "unsure"}.get(cell, "")


PROTOCOL_NOTE = (
    "Fair protocol: every arm uses the same code, data, seeds and schedule; each number is the model at the end "
    "of training (no test-set selection); mean ± sample std over seeds. A paired comparison takes the per-seed "
    "difference treatment − base (same seed = same initialisation and batches) and its 95 % t-interval: "
    "reproduced when the whole interval lies above the claimed minimal gain (0 unless stated), not reproduced "
    "when it lies below, inconclusive otherwise (or with fewer than two seeds)."
)


def write_report(study: Study, out_dir: str | Path) -> tuple[Path, Path]:
    """Draw every picture of ``study.analyses`` and write ``report.md`` and ``report.html`` into ``out_dir``."""
    out_dir = Path(out_dir)
    results = collect(study, out_dir)
    if not results.runs:
        raise ValueError(f"no finished run of study {study.name!r} under {out_dir / 'runs'}: nothing to report")
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    pictures: list[Picture] = []
    for analysis in study.analyses:
        if analysis in FIGURES:
            filename, draw = FIGURES[analysis]
            picture = draw(results, figures_dir / filename)
            if picture is not None:
                pictures.append(picture)
        elif analysis == "ranked_lists":
            pictures.extend(ranked_pictures(results))
    missing = [a for a in study.analyses if a in FIGURES and not any(p.path.name == FIGURES[a][0] for p in pictures)]
    metric_header, metric_rows = metrics_table(results)
    comp_header, comp_rows = comparisons_table(results)
    total = sum(len(r) for r in results.runs.values())
    planned = len(plan_runs(study, out_dir))
    intro = f"{total} of {planned} runs finished; main metric {study.metric}; seeds {study.seeds}."
    skipped = f"Analyses with nothing to draw for this grid or these runs: {', '.join(missing)}." if missing else ""

    md = [f"# Study {study.name}", "", study.description, "", intro, "", PROTOCOL_NOTE, ""]
    md += ["## Metrics per cell (mean ± std over seeds)", "", _md_table(metric_header, metric_rows), ""]
    if comp_rows:
        md += ["## Paired comparisons", "", _md_table(comp_header, comp_rows), ""]
    md += ["## Pictures", ""] + ([skipped, ""] if skipped else [])
    for p in pictures:
        rel = p.path.relative_to(out_dir) if p.path.is_relative_to(out_dir) else p.path
        md += [f"### {p.title}", "", f"![{p.title}]({rel.as_posix()})", "", f"*{p.caption}*", ""]
    md_path = atomic_write_text(out_dir / "report.md", "\n".join(md))

    parts = [
        f"<h1>Study {html.escape(study.name)}</h1>",
        f"<p>{html.escape(study.description)}</p>" if study.description else "",
        f"<p>{html.escape(intro)}</p><p class='note'>{html.escape(PROTOCOL_NOTE)}</p>",
        "<h2>Metrics per cell (mean ± std over seeds)</h2>",
        _html_table(metric_header, metric_rows),
    ]
    if comp_rows:
        parts += ["<h2>Paired comparisons</h2>", _html_table(comp_header, comp_rows)]
    parts.append("<h2>Pictures</h2>")
    if skipped:
        parts.append(f"<p class='note'>{html.escape(skipped)}</p>")
    for p in pictures:
        data = base64.b64encode(p.path.read_bytes()).decode("ascii")
        parts.append(
            f"<figure><h3>{html.escape(p.title)}</h3><img alt='{html.escape(p.title)}' "
            f"src='data:image/png;base64,{data}'><figcaption>{html.escape(p.caption)}</figcaption></figure>"
        )
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:12px;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 6px}"
        "th{background:#f3f3f3}td.ok{background:#d8f5d8}td.bad{background:#f8d7d7}td.unsure{background:#fff3cd}"
        "img{max-width:100%}figure{margin:1.5em 0}figcaption{font-style:italic;color:#444}.note{color:#555}"
    )
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Study {html.escape(study.name)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )
    html_path = atomic_write_text(out_dir / "report.html", page)
    return md_path, html_path
