"""What a finished run leaves and how it is reported: :class:`RunResult`, ``results.json``, ``curves.png``,
the mean and spread over seeds, and the results table that ``centrum train`` prints.

The table fits :data:`TABLE_WIDTH` columns (wider tables are split into blocks of columns), shows metrics in
percent and counts below it, labels centroid rows as using the gallery's labels (a centroid is the mean of a
gallery class's images, so the labels shape the gallery), and leaves out the Acc@K / Rank-K columns with K at
least the number of gallery classes: a centroid gallery then has at most K entries, so every query with a
match scores 100 % by construction, and the per-image figure is near that bound too.
"""

from __future__ import annotations

import contextlib
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from centrum.training.callbacks import flatten_metrics

#: the width the printed results table fits
TABLE_WIDTH = 100
_TOP_K = re.compile(r"^(?:Acc@|Rank-)(\d+)$")
CENTROID_LABEL = " (gallery labels)"


@dataclass
class RunResult:
    """What a finished run leaves: its folder, final metrics per protocol, the model checkpoint, the
    metrics of every evaluation during training, the trained model itself (in eval mode), and the number of
    gallery classes (``None`` when unknown), which bounds the meaningful Acc@K."""

    run_dir: Path
    metrics: dict[str, dict]
    checkpoint: Path
    history: list[tuple[int, dict[str, dict]]]
    model: torch.nn.Module
    gallery_classes: int | None = None


def finite(value: Any) -> Any:
    """NaN/inf metrics (e.g. no valid query) as ``null``: results.json stays strict JSON."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_curves(run_dir: Path) -> None:
    """``curves.png`` from ``metrics.csv``; a run whose log has nothing to draw simply has no picture."""
    from centrum.reports.plots import plot_training_curves

    with contextlib.suppress(ValueError, FileNotFoundError):
        plot_training_curves(run_dir / "metrics.csv", run_dir / "curves.png")


def summarize_runs(results: list[dict[str, dict]]) -> dict[str, dict[str, Any]]:
    """Mean and sample standard deviation over runs of every scalar metric: ``{protocol: {metric: (mean, std)}}``."""
    flat = [flatten_metrics(r) for r in results]
    summary: dict[str, dict[str, Any]] = {}
    for key in flat[0] if flat else []:
        values = [f[key] for f in flat if key in f and not math.isnan(f[key])]
        protocol, name = key.split("/", 1)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        summary.setdefault(protocol, {})[name] = (statistics.fmean(values), std)
    return summary


def _is_scalar(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_centroid_row(name: str) -> bool:
    return "centroids" in name


def gallery_classes_of(metrics: dict[str, dict]) -> int | None:
    """The number of gallery classes as the centroid protocols report it (``None`` without a centroid row).

    ``products-centroids`` has one gallery entry per class; ``reid-centroids`` counts its centroids apart
    from distractor singletons.
    """
    for name, values in metrics.items():
        key = "num_gallery_entries" if name.startswith("products-centroids") else "num_centroids"
        if name.startswith(("products-centroids", "reid-centroids")) and (count := _value(values.get(key))):
            return int(count[0] if isinstance(count, tuple) else count)
    return None


def _value(value: Any) -> float | tuple[float, float] | None:
    """A metric's value (or a ``(mean, std)`` tuple) as numbers, ``None`` when it is neither (a list: a curve)."""
    if isinstance(value, tuple) and len(value) == 2 and all(_is_scalar(v) for v in value):
        return float(value[0]), float(value[1])
    return float(value) if _is_scalar(value) else None


def _cell(value: float | tuple[float, float] | None, count: bool) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        mean, std = value
        if count:
            return _cell(mean, count=True) + (f" ± {std:.1f}" if std else "")
        return f"{100 * mean:.2f} ± {100 * std:.2f}"
    if count:
        return str(int(value)) if float(value).is_integer() else f"{value:.1f}"
    return "nan" if math.isnan(value) else f"{100 * value:.2f}"


def _blocks(names: list[str], columns: list[str], cells: dict[str, dict[str, str]], width: int) -> list[str]:
    """Lines of a table split into blocks of columns that each fit ``width`` (at least one column a block)."""
    first = max([len(n) for n in names] + [0])
    widths = {c: max([len(c)] + [len(cells[n][c]) for n in names]) for c in columns}
    blocks: list[list[str]] = [[]]
    used = first
    for column in columns:
        if blocks[-1] and used + 2 + widths[column] > width:
            blocks.append([])
            used = first
        blocks[-1].append(column)
        used += 2 + widths[column]
    lines: list[str] = []
    for block in blocks:
        if lines:
            lines.append("")
        header = " " * first + "".join("  " + c.rjust(widths[c]) for c in block)
        lines += [header.rstrip(), "-" * len(header.rstrip())]
        for n in names:
            lines.append((n.ljust(first) + "".join("  " + cells[n][c].rjust(widths[c]) for c in block)).rstrip())
    return lines


def format_results_table(metrics: dict[str, dict], gallery_classes: int | None = None, width: int = TABLE_WIDTH) -> str:
    """The final metrics of a run (or ``(mean, std)`` pairs over runs) as a plain-text table for people.

    One row per protocol, metrics in percent; centroid rows are labelled as using the gallery labels; the
    Acc@K / Rank-K columns with K >= ``gallery_classes`` (default: as the centroid rows report it) are left
    out, and a line says so; counts (``num_*``) follow the table, one line per protocol. Lines fit ``width``.
    """
    gallery_classes = gallery_classes if gallery_classes is not None else gallery_classes_of(metrics)
    rows = {name: {k: _value(v) for k, v in values.items()} for name, values in metrics.items()}
    rows = {name: {k: v for k, v in values.items() if v is not None} for name, values in rows.items()}
    columns: list[str] = []
    for values in rows.values():
        columns += [c for c in values if not c.startswith("num_") and c not in columns]
    dropped = [c for c in columns if (m := _TOP_K.match(c)) and gallery_classes and int(m[1]) >= gallery_classes]
    columns = [c for c in columns if c not in dropped]
    names = {name: name + (CENTROID_LABEL if _is_centroid_row(name) else "") for name in rows}
    cells = {names[name]: {c: _cell(values.get(c), count=False) for c in columns} for name, values in rows.items()}
    lines = ["metrics in %"] if columns else []
    lines += _blocks(list(cells), columns, cells, width) if columns else []
    if dropped:
        lines.append(f"({', '.join(dropped)} left out: K >= the {gallery_classes} gallery classes)")
    if any(_is_centroid_row(name) for name in rows):
        lines.append("(centroid rows average the gallery's images per class: they use the gallery labels)")
    for name, values in rows.items():
        counts = [f"{c.removeprefix('num_').replace('_', ' ')} {_cell(v, count=True)}" for c, v in values.items()
                  if c.startswith("num_")]  # fmt: skip
        if counts:
            lines.append(f"{name}: {', '.join(counts)}")
    return "\n".join(lines)
