"""Ranked lists as pictures: each query in a row, labelled with its file name and class, then its top matches
framed green (same class), red (another class) or grey (the query has no class), each with its rank, class and
distance.

Many queries are split over pages of at most ``rows_per_page`` rows, and at most ``max_matches`` matches are
drawn per row, so that every page stays readable (about 1,800 x 1,600 pixels at the defaults) however many
queries and however large ``k`` a search asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

ROWS_PER_PAGE = 8
MAX_MATCHES = 10
_HIT, _MISS, _UNKNOWN = "#1a7f37", "#cf222e", "#57606a"


@dataclass
class Match:
    """One retrieved item: how to load its image, its class's name, its distance and whether it is right."""

    load: Callable[[], Image.Image]
    label: str
    distance: float | None = None
    hit: bool | None = None


@dataclass
class QueryRow:
    """One query: how to load its image, its (shortened) file name or id, its class name and its matches."""

    load: Callable[[], Image.Image]
    name: str
    label: str | None
    matches: list[Match] = field(default_factory=list)


def shorten(text: str, width: int = 24) -> str:
    """``text`` cut in the middle with an ellipsis when longer than ``width`` characters (ends are the
    informative part of a path: the folder and the file's number)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def display_name(path: str, width: int = 24) -> str:
    """A query's file name for a picture: ``folder/file`` (a class folder says a lot), shortened."""
    parts = Path(path).parts
    return shorten("/".join(parts[-2:]) if len(parts) >= 2 else str(path), width)


def distance_decimals(values: Sequence[float]) -> int:
    """Decimals that give the smallest non-zero distance three significant digits (2 to 8), so that one page
    prints every distance alike and a collapsed model's tiny distances do not all print as 0.00."""
    nonzero = [abs(v) for v in values if v and np.isfinite(v)]
    if not nonzero:
        return 2
    return int(min(8, max(2, 2 - np.floor(np.log10(min(nonzero))))))


def format_distance(value: float, decimals: int = 3) -> str:
    """``value`` with ``decimals`` decimals (see :func:`distance_decimals`)."""
    return f"{value:.{decimals}f}"


# the page's geometry in inches: laid out by hand, so that no title overlaps the row above and pages of
# 88 images need no layout engine (constrained layout took seconds per page)
_CELL, _GAP, _QUERY_W, _QUERY_GAP = 1.2, 0.18, 1.5, 0.3
_TITLE_H, _ROW_GAP, _LEFT, _RIGHT, _BOTTOM = 0.36, 0.12, 0.3, 0.15, 0.12


def _place(fig: Figure, left: float, top: float, width: float, height: float):
    """An axes at ``left``/``top`` (inches from the figure's left and top edges) of the given size."""
    fig_w, fig_h = fig.get_size_inches()
    return fig.add_axes((left / fig_w, 1 - (top + height) / fig_h, width / fig_w, height / fig_h))


def ranked_page_figure(rows: Sequence[QueryRow], title: str | None = None, max_matches: int = MAX_MATCHES) -> Figure:
    """One page: a row per query, the query first (its file name and class above it), then up to
    ``max_matches`` of its matches, each titled with its rank, class and distance."""
    if not rows:
        raise ValueError("no query to draw: the list of queries is empty")
    k = max(1, min(max_matches, max(len(r.matches) for r in rows)))
    header = 0.75 if title else 0.45  # the title and the colour key
    row_h = _TITLE_H + _CELL + _ROW_GAP
    width = _LEFT + _QUERY_W + _QUERY_GAP + k * (_CELL + _GAP) + _RIGHT
    height = header + len(rows) * row_h + _BOTTOM
    fig = plt.figure(figsize=(width, height))
    decimals = distance_decimals([m.distance for row in rows for m in row.matches[:k] if m.distance is not None])
    for r, row in enumerate(rows):
        top = header + r * row_h + _TITLE_H
        ax = _place(fig, _LEFT, top, _QUERY_W, _CELL)
        ax.imshow(row.load())
        caption = row.name if row.label is None else f"{row.name}\nclass {shorten(row.label, 24)}"
        ax.set_title(caption, fontsize=7, fontweight="bold")
        ax.set_ylabel(f"query {r + 1}", fontsize=7)
        for spine in ax.spines.values():
            spine.set_edgecolor("black")
            spine.set_linewidth(2)
        for j, match in enumerate(row.matches[:k]):
            left = _LEFT + _QUERY_W + _QUERY_GAP + j * (_CELL + _GAP)
            ax = _place(fig, left, top, _CELL, _CELL)
            ax.imshow(match.load())
            color = _UNKNOWN if match.hit is None else _HIT if match.hit else _MISS
            caption = f"{j + 1}. {shorten(match.label, 21)}"
            if match.distance is not None:
                caption += f"\nd = {format_distance(match.distance, decimals)}"
            ax.set_title(caption, fontsize=7, color=color)
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(3 if match.hit is not None else 1)
    for ax in fig.axes:
        ax.set_xticks([])
        ax.set_yticks([])
    key = "frame: green = same class as the query, red = another class"
    if all(m.hit is None for row in rows for m in row.matches):
        key = "queries without a class: matches are not judged"
    fig.suptitle(f"{title}\n{key}" if title else key, fontsize=9, y=1 - 0.1 / height, va="top")
    return fig


def page_paths(path: str | Path, pages: int) -> list[Path]:
    """Where each page goes: ``path`` itself for the first, ``<stem>-2<suffix>``, ``<stem>-3<suffix>``, ...
    after it (a PDF holds every page in one file)."""
    path = Path(path)
    if pages <= 1 or path.suffix.lower() == ".pdf":
        return [path]
    return [path] + [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(2, pages + 1)]


def save_ranked_pages(
    rows: Sequence[QueryRow],
    path: str | Path,
    title: str | None = None,
    rows_per_page: int = ROWS_PER_PAGE,
    max_matches: int = MAX_MATCHES,
) -> list[Path]:
    """Draw ``rows`` on pages of at most ``rows_per_page`` queries and save them (see :func:`page_paths`);
    each file is written atomically. Returns the files written, first page first."""
    from centrum.io import atomic_write_bytes, save_figure

    if rows_per_page < 1:
        raise ValueError(f"rows_per_page must be >= 1, got {rows_per_page}")
    if not rows:
        raise ValueError("no query to draw: the list of queries is empty")
    chunks = [rows[i : i + rows_per_page] for i in range(0, len(rows), rows_per_page)]
    shown = max(len(r.matches) for r in rows)
    heading = title or "ranked lists"
    if shown > max_matches:
        heading += f" (top {max_matches} of {shown} shown)"
    paths = page_paths(path, len(chunks))
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    if len(paths) == 1 and len(chunks) > 1:  # a multi-page PDF
        import io

        from matplotlib.backends.backend_pdf import PdfPages

        buffer = io.BytesIO()
        with PdfPages(buffer) as pdf:
            for i, chunk in enumerate(chunks):
                fig = ranked_page_figure(chunk, f"{heading}, page {i + 1} of {len(chunks)}", max_matches)
                pdf.savefig(fig)
                plt.close(fig)
        return [atomic_write_bytes(paths[0], buffer.getvalue())]
    written = []
    for i, (chunk, target) in enumerate(zip(chunks, paths, strict=True)):
        page_title = heading if len(chunks) == 1 else f"{heading}, page {i + 1} of {len(chunks)}"
        fig = ranked_page_figure(chunk, page_title, max_matches)
        try:
            written.append(save_figure(fig, target, dpi=110))
        finally:
            plt.close(fig)
    return written


def plot_search_results(
    query_paths: Sequence[str],
    query_labels: Sequence[int] | np.ndarray,
    matches: Sequence[Sequence[tuple[str, int, float]]],
    names: dict[int, str],
    path: str | Path,
    load: Callable[[str], Image.Image] | None = None,
    title: str | None = None,
    rows_per_page: int = ROWS_PER_PAGE,
    max_matches: int = MAX_MATCHES,
) -> list[Path]:
    """The picture of ``centrum search --picture``: one row per query image, labelled with its file name.

    ``matches[q]`` holds ``(image path, class label, distance)`` per match, best first; labels and
    ``query_labels`` index ``names``; a query label of -1 means "no class" (its matches are not judged) and
    one below -1 "a class the index does not hold" (every match is wrong). ``load`` reads an image (by default
    Pillow, RGB). Many queries make several pages: see :func:`save_ranked_pages`. Returns the files written.
    """
    if len(query_paths) != len(matches) or len(query_paths) != len(query_labels):
        raise ValueError(
            f"{len(query_paths)} query paths, {len(query_labels)} query labels and {len(matches)} match lists: "
            "each query needs one of each"
        )
    read = load or _read_rgb

    def name_of(label: int) -> str:
        return "(no class)" if label == -1 else names.get(int(label), str(int(label)))

    rows = []
    for q, query_path in enumerate(query_paths):
        label = int(query_labels[q])
        judged = label != -1
        rows.append(
            QueryRow(
                load=lambda p=query_path: read(p),
                name=display_name(query_path),
                label=None if label == -1 else "(not in index)" if label < -1 else name_of(label),
                matches=[
                    Match(lambda p=p: read(p), name_of(lab), float(d), (int(lab) == label) if judged else None)
                    for p, lab, d in matches[q]
                ],
            )
        )
    k = max((len(m) for m in matches), default=0)
    heading = title or f"search: top-{k} matches of {len(rows)} quer{'y' if len(rows) == 1 else 'ies'}"
    return save_ranked_pages(rows, path, heading, rows_per_page, max_matches)


def _read_rgb(path: str) -> Image.Image:
    """The image at ``path`` in RGB, or a grey placeholder naming it when it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError):
        return placeholder(path)


def placeholder(path: str, size: int = 96) -> Image.Image:
    """A grey square naming ``path``: drawn where an image of a ranked list cannot be read."""
    import textwrap

    from PIL import ImageDraw

    image = Image.new("RGB", (size, size), (200, 200, 200))
    draw = ImageDraw.Draw(image)
    text = "missing:\n" + "\n".join(textwrap.wrap(Path(path).name or path, 14)[:4])
    draw.multiline_text((4, 4), text, fill=(90, 0, 0))
    return image


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
    query_names: Sequence[str] | None = None,
    rows_per_page: int | None = None,
) -> Path:
    """Save one row per query: the query image, then its top-K gallery matches framed green (same label)
    or red (other label), each captioned with its rank, label and distance.

    ``ranked_gallery[i]`` holds the gallery indices ranked for ``query_indices[i]``; labels index with those.
    ``query_names[i]`` (a file name, shortened) labels row ``i``; without it the row says "query".
    All rows go on one page unless ``rows_per_page`` is given (then further pages are ``<stem>-2.png``, ...).
    Returns the first page's path.
    """
    ranked_gallery = np.asarray(ranked_gallery)
    if len(query_indices) == 0:
        raise ValueError("no query to draw: query_indices is empty")

    def name(label: int) -> str:
        return class_names.get(int(label), str(int(label))) if class_names else str(int(label))

    rows = []
    for r, q in enumerate(query_indices):
        q_label = query_labels[q]
        rows.append(
            QueryRow(
                load=lambda q=int(q): load_query(q),
                name=display_name(query_names[r]) if query_names is not None else "query",
                label=name(q_label),
                matches=[
                    Match(
                        lambda g=int(g): load_gallery(g),
                        name(gallery_labels[g]),
                        None if distances is None else float(distances[r, j]),
                        bool(gallery_labels[g] == q_label),
                    )
                    for j, g in enumerate(ranked_gallery[r])
                ],
            )
        )
    pages = save_ranked_pages(
        rows, path, title, rows_per_page or len(rows), max_matches=max(MAX_MATCHES, ranked_gallery.shape[1])
    )
    return pages[0]
