"""The study report: ``report.md`` and a self-contained ``report.html`` (images embedded as base64).

Tables (:mod:`centrum.study.tables`): every metric of every cell (mean +- std over seeds) and every paired
comparison (mean difference, 95 % t-interval, verdict, what would decide it). Pictures
(:mod:`centrum.study.figures`), each with a title, labelled axes and a caption saying what to look for.
Everything is read back from the run folders (:mod:`centrum.study.results`), so a report can be redrawn without
training (``centrum study ... --report-only``). The page reads well on a phone: tables scroll sideways in
their own box and pictures shrink to the page's width.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from centrum.io import atomic_write_text
from centrum.study.figures import (
    FIGURES,
    SYNTHETIC_COLUMN,
    Picture,
    figure_centroids,
    figure_curves,
    figure_heatmap,
    figure_step_cost,
    figure_synthetic,
    figure_topk,
    figure_tsne,
    ranked_pictures,
    synthetic_column,
)
from centrum.study.results import RunData, StudyResults, collect, judge
from centrum.study.runner import plan_runs
from centrum.study.spec import Study
from centrum.study.tables import (
    PROTOCOL_NOTE,
    SEQUENTIAL_NOTE,
    comparisons_table,
    html_table,
    md_table,
    metrics_table,
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
    if results.design is not None:
        planned_text = f"up to {len(plan_runs(study, out_dir, seeds=results.seeds))} runs planned"
        first = results.seeds[: results.design.looks[0]]
        seeds_text = f"seeds {first}, then more for open claims up to {len(results.seeds)}"
        sequential = SEQUENTIAL_NOTE.format(
            looks=", ".join(map(str, results.design.looks)),
            bounds=", ".join(f"{b:.3g}" for b in results.design.boundaries),
        )
    else:
        planned_text = f"of {len(plan_runs(study, out_dir))} runs"
        seeds_text = f"seeds {study.seeds}"
        sequential = ""
    intro = f"{total} {planned_text} finished; main metric {study.metric}; {seeds_text}."
    skipped = f"Analyses with nothing to draw for this grid or these runs: {', '.join(missing)}." if missing else ""

    md = [f"# Study {study.name}", "", study.description, "", intro, "", PROTOCOL_NOTE, ""]
    if sequential:
        md += [sequential, ""]
    md += ["## Metrics per cell (mean ± std over seeds)", "", md_table(metric_header, metric_rows), ""]
    if comp_rows:
        md += ["## Paired comparisons", "", md_table(comp_header, comp_rows), ""]
    md += ["## Pictures", ""] + ([skipped, ""] if skipped else [])
    for p in pictures:
        rel = p.path.relative_to(out_dir) if p.path.is_relative_to(out_dir) else p.path
        md += [f"### {p.title}", "", f"![{p.title}]({rel.as_posix()})", "", f"*{p.caption}*", ""]
    md_path = atomic_write_text(out_dir / "report.md", "\n".join(md))

    parts = [
        f"<h1>Study {html.escape(study.name)}</h1>",
        f"<p>{html.escape(study.description)}</p>" if study.description else "",
        f"<p>{html.escape(intro)}</p><p class='note'>{html.escape(PROTOCOL_NOTE)}</p>",
        f"<p class='note'>{html.escape(sequential)}</p>" if sequential else "",
        "<h2>Metrics per cell (mean ± std over seeds)</h2>",
        html_table(metric_header, metric_rows),
    ]
    if comp_rows:
        parts += ["<h2>Paired comparisons</h2>", html_table(comp_header, comp_rows)]
    parts.append("<h2>Pictures</h2>")
    if skipped:
        parts.append(f"<p class='note'>{html.escape(skipped)}</p>")
    for p in pictures:
        data = base64.b64encode(p.path.read_bytes()).decode("ascii")
        kind = f" class='{p.kind}'" if p.kind else ""
        parts.append(
            f"<figure{kind}><h3>{html.escape(p.title)}</h3><img alt='{html.escape(p.title)}' "
            f"src='data:image/png;base64,{data}'><figcaption>{html.escape(p.caption)}</figcaption></figure>"
        )
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;line-height:1.4}"
        ".scroll{overflow-x:auto;max-width:100%;margin:1em 0}"
        "table{border-collapse:collapse;font-size:12px}th,td{border:1px solid #ccc;padding:3px 6px}"
        "th{background:#f3f3f3;position:sticky;top:0}td{min-width:3em}"
        "td.ok{background:#d8f5d8}td.bad{background:#f8d7d7}td.unsure{background:#fff3cd}td.void{background:#e2e2f5}"
        "img{max-width:100%;height:auto}figure{margin:1.5em 0}figcaption{font-style:italic;color:#444}"
        ".note{color:#555}h1{font-size:1.6em;overflow-wrap:anywhere}td:last-child{min-width:12em}"
        "figure.ranked img{max-width:min(100%,760px)}"
    )
    # "95 %" never breaks between the number and its sign
    body = "".join(parts).replace(" %", "\u00a0%")
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>Study {html.escape(study.name)}</title>"
        f"<style>{style}</style></head><body>{body}</body></html>"
    )
    html_path = atomic_write_text(out_dir / "report.html", page)
    return md_path, html_path


# the names this module held before it was split keep working
__all__ = [
    "FIGURES",
    "PROTOCOL_NOTE",
    "SYNTHETIC_COLUMN",
    "Picture",
    "RunData",
    "StudyResults",
    "collect",
    "comparisons_table",
    "figure_centroids",
    "figure_curves",
    "figure_heatmap",
    "figure_step_cost",
    "figure_synthetic",
    "figure_topk",
    "figure_tsne",
    "judge",
    "metrics_table",
    "ranked_pictures",
    "synthetic_column",
    "write_report",
]
