"""Training curves of a run: the ``metrics.csv`` that Lightning's CSV logger writes, drawn as a grid of panels.

What is drawn, and why:

- the training loss, its terms (one panel, one line each) and the statistics that describe training (such as
  Symmetrical Synthesis's share of synthetic negatives); counters (``num_*``: queries, gallery images,
  negatives, candidates) are sizes, not progress, and get no panel;
- the learning rate, placed at the epoch that *used* it (see :func:`learning_rate_points`);
- per evaluation protocol, one panel for its top-k hit rates (Recall@K, Acc@k, Rank-k) and one for its
  ranking and clustering scores (mAP, MAP@R, mINP, NMI, F1, ...), in percent as the results table prints them.

Every panel has a title, labelled axes and the same epoch range, so panels line up even when evaluation ran
only every few epochs.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

MAX_COLUMNS = 3
_RANK_METRIC = re.compile(r"^(recall|acc|rank|r|cmc|top)[@\-_ ]?(\d+)$", re.IGNORECASE)
_TITLES = {
    "synthetic_ratio": "share of synthetic negatives",
    "cross_entropy": "cross-entropy",
    "centroid_triplet": "centroid triplet",
}


@dataclass
class Panel:
    """One panel of the grid: a title, a y-axis label and its curves ``{legend label: (epochs, values)}``."""

    title: str
    ylabel: str
    curves: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    log_y: bool = False
    note: str = ""


def is_counter(column: str) -> bool:
    """True for a logged count (``num_queries``, ``train/triplet/num_negatives_epoch``): a size, not progress."""
    last = column.rsplit("/", 1)[-1].removesuffix("_epoch").removesuffix("_step")
    return last.startswith("num_") or last in ("count", "size")


def read_metrics(metrics_csv: str | Path) -> list[dict[str, str]]:
    """The rows of a run's ``metrics.csv``; ``FileNotFoundError`` naming it when it is missing."""
    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        raise FileNotFoundError(f"metrics file {metrics_csv} does not exist")
    with metrics_csv.open(newline="") as f:
        return list(csv.DictReader(f))


def column_points(rows: list[dict[str, str]], column: str) -> list[tuple[int, float]]:
    """``(epoch, value)`` of one column, epochs 1-based; a repeated epoch (a resumed run) keeps its last row."""
    points: dict[int, float] = {}
    for row in rows:
        value, epoch = row.get(column), row.get("epoch")
        if value in (None, "") or epoch in (None, ""):
            continue
        number = float(value)
        if math.isfinite(number):
            points[int(float(epoch)) + 1] = number
    return sorted(points.items())


def learning_rate_points(rows: list[dict[str, str]]) -> list[tuple[int, float]]:
    """The learning rate of each epoch (1-based), as the epoch lines of ``centrum train`` print it.

    ``train/lr_epoch``, when logged, is the rate the epoch trained with. ``train/lr`` is logged at the end of
    epoch ``e`` *after* the scheduler's step, so it is the rate of epoch ``e + 1``: it is moved there, and the
    value logged after the last epoch (a rate no epoch used) is dropped. The first epoch's rate is then unknown
    from ``train/lr`` alone and is left out rather than guessed.
    """
    used = column_points(rows, "train/lr_epoch")
    if used:
        return used
    last_epoch = max((int(float(r["epoch"])) + 1 for r in rows if r.get("epoch") not in (None, "")), default=0)
    return [(epoch + 1, value) for epoch, value in column_points(rows, "train/lr") if epoch + 1 <= last_epoch]


def _pretty(name: str) -> str:
    return _TITLES.get(name, name.replace("_", " ").replace("/", " "))


def _rank_k(metric: str) -> int | None:
    match = _RANK_METRIC.match(metric)
    return int(match.group(2)) if match else None


def training_panels(rows: list[dict[str, str]]) -> list[Panel]:
    """The panels :func:`plot_training_curves` draws from ``metrics.csv`` rows, in reading order."""
    columns = list(rows[0].keys()) if rows else []
    panels: list[Panel] = []
    loss = Panel("training loss", "loss (mean over the epoch)")
    terms = Panel("loss terms", "loss (mean over the epoch)")
    statistics: list[Panel] = []
    for column in columns:
        if not (column.startswith("train/") and column.endswith("_epoch")) or is_counter(column):
            continue
        name = column.removeprefix("train/").removesuffix("_epoch")
        if name == "lr":
            continue
        points = column_points(rows, column)
        if not points:
            continue
        curve = ([e for e, _ in points], [v for _, v in points])
        if name == "loss":
            loss.curves["loss"] = curve
        elif "/" in name or name.endswith(("ratio", "share", "fraction", "rate")):
            ylabel = "share" if name.endswith(("ratio", "share", "fraction")) else "value"
            statistics.append(Panel(_pretty(name), ylabel, {_pretty(name): curve}))
        else:
            terms.curves[_pretty(name)] = curve
    for panel in (loss, terms):
        if panel.curves:
            panels.append(panel)
    if len(terms.curves) > 1:
        values = [v for _, ys in terms.curves.values() for v in ys if v > 0]
        terms.log_y = bool(values) and max(values) / min(values) > 50
    panels += statistics
    lr = learning_rate_points(rows)
    if lr:
        values = [v for _, v in lr]
        missing = "epoch 1" if lr[0][0] == 2 else f"epochs 1-{lr[0][0] - 1}"
        panels.append(
            Panel(
                "learning rate",
                "learning rate",
                {"lr": ([e for e, _ in lr], values)},
                log_y=min(values) > 0 and max(values) / min(values) > 10,
                # train/lr is logged after the scheduler's step: the first epoch's rate is not in the log
                note="" if lr[0][0] == 1 else f"{missing}: rate not logged",
            )
        )
    protocols: dict[str, tuple[Panel, Panel]] = {}
    for column in columns:
        if not column.startswith("eval/") or is_counter(column):
            continue
        protocol, _, metric = column.removeprefix("eval/").rpartition("/")
        if not protocol:
            protocol, metric = metric, metric
        points = column_points(rows, column)
        if not points:
            continue
        ranks, scores = protocols.setdefault(
            protocol,
            (Panel(f"{protocol}: top-k hits (test)", "% of queries"), Panel(f"{protocol}: scores (test)", "%")),
        )
        target = ranks if _rank_k(metric) is not None else scores
        target.curves[metric] = ([e for e, _ in points], [100 * v for _, v in points])
    # each protocol's per-image panels before its centroid variant's ("products", then "products-centroids")
    for protocol in sorted(protocols, key=lambda p: (p.removesuffix("-centroids"), p.endswith("-centroids"))):
        ranks, scores = protocols[protocol]
        ranks.curves = dict(sorted(ranks.curves.items(), key=lambda kv: _rank_k(kv[0]) or 0))
        # a hit rate at 100 % on every evaluation (Acc@10 with 5 class centroids) says nothing: named, not drawn
        saturated = [m for m, (_, ys) in list(ranks.curves.items())[1:] if min(ys) >= 100 - 1e-9]
        for metric in saturated:
            del ranks.curves[metric]
        if saturated:
            ranks.note = f"{', '.join(saturated)}: 100 % throughout (not drawn)"
        # mAP-like scores first: they are what a reader compares
        scores.curves = dict(sorted(scores.curves.items(), key=lambda kv: ("map" not in kv[0].lower(), kv[0])))
        for panel in (ranks, scores):
            if len(panel.curves) == 1:  # one curve: its name is the title, no legend needed
                (metric,) = panel.curves
                panel.title = f"{panel.title.split(':')[0]} {metric} (test)"
            if panel.curves:
                panels.append(panel)
    return panels


def _percent_range(ax, values: list[float], span: float = 10.0) -> None:
    """At least ``span`` percentage points of y range, inside [0, 100] where the data allow: a change of
    1.5 points must not fill the panel as if it were a collapse."""
    low, high = min(values), max(values)
    if high - low >= span:
        return
    middle = (low + high) / 2
    bottom = min(max(0.0, middle - span / 2), low)
    top = max(min(100.0, bottom + span), high)
    bottom = min(bottom, top - span) if top - span >= 0 else bottom
    ax.set_ylim(bottom - 0.5, top + 0.5)


def _explicit_panels(rows: list[dict[str, str]], keys: Sequence[str]) -> list[Panel]:
    panels = []
    for key in keys:
        points = learning_rate_points(rows) if key == "train/lr" else column_points(rows, key)
        if points:
            title = key.removeprefix("train/").removesuffix("_epoch").replace("/", " ")
            panels.append(Panel(title, title, {title: ([e for e, _ in points], [v for _, v in points])}))
    return panels


def training_curves_figure(
    metrics_csv: str | Path, keys: Sequence[str] | None = None, title: str | None = None
) -> Figure:
    """The Matplotlib figure of :func:`plot_training_curves` (for callers that place or inspect it)."""
    metrics_csv = Path(metrics_csv)
    rows = read_metrics(metrics_csv)
    panels = _explicit_panels(rows, keys) if keys else training_panels(rows)
    if not panels:
        raise ValueError(f"{metrics_csv} has no per-epoch columns to plot")
    last_epoch = max(max(xs) for p in panels for xs, _ in p.curves.values())
    n = len(panels)
    cols = min(MAX_COLUMNS, n)
    rows_n = -(-n // cols)
    fig, axes = plt.subplots(
        rows_n, cols, figsize=(4.4 * cols, 3.1 * rows_n + 0.5), squeeze=False, layout="constrained"
    )
    for ax, panel in zip(axes.flat, panels, strict=False):
        for label, (xs, ys) in panel.curves.items():
            ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.4, label=label)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("epoch", fontsize=9)
        ax.set_ylabel(panel.ylabel, fontsize=9)
        ax.set_xlim(0.5, last_epoch + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if panel.log_y:
            ax.set_yscale("log")
        elif panel.ylabel.startswith("%"):
            _percent_range(ax, [v for _, ys in panel.curves.values() for v in ys])
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if len(panel.curves) > 1:  # below the panel, never over a line
            ax.legend(
                fontsize=7,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.2),
                ncol=len(panel.curves) if len(panel.curves) <= 5 else -(-len(panel.curves) // 2),
                frameon=False,
                handlelength=1.5,
                columnspacing=1.0,
            )
        if panel.note:
            ax.text(0.02, 0.03, panel.note, transform=ax.transAxes, fontsize=7, color="#57606a")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(title or f"training curves: {metrics_csv.parent.name or metrics_csv.name}", fontsize=12)
    return fig


def plot_training_curves(
    metrics_csv: str | Path, path: str | Path, keys: Sequence[str] | None = None, title: str | None = None
) -> Path:
    """Plot the per-epoch curves of a run's ``metrics.csv`` (Lightning's CSV logger) into one PNG.

    A titled grid (at most three panels a row): the training loss, its terms, training statistics, the
    learning rate and each evaluation protocol's metrics (see the module's docstring); counters get no panel.
    ``keys`` instead draws one panel per named column. The x axis is the epoch (1-based, integer ticks), the
    same range on every panel. Written atomically; ``ValueError`` when there is nothing to draw.
    """
    from centrum.io import save_figure

    fig = training_curves_figure(metrics_csv, keys, title)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        return save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
