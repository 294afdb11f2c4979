"""The study report's tables: every metric per cell (mean ± std over seeds) and every judged claim (means,
paired difference, its interval, the verdict and, for a claim left open, the seeds that would decide it), as
Markdown and as HTML."""

from __future__ import annotations

import html
import math

from centrum.study.results import StudyResults
from centrum.study.stats import (
    COLLAPSED,
    IDENTICAL,
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    PairedResult,
    mean_std,
)


def fmt(mean: float, std: float | None = None) -> str:
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
            row.append(fmt(*mean_std(vals)) if vals else "–")
        rows.append(row)
    return header, rows


def what_would_decide(res: PairedResult) -> str:
    """For an open claim: the paired seeds a fixed-size test needs to detect its gain with power 0.8 at the
    observed spread; for identical or collapsed arms, why no number of seeds helps."""
    if res.note:
        return res.note
    if res.verdict != INCONCLUSIVE:
        return ""
    if len(res.diffs) < 2:
        return "needs at least 2 paired seeds"
    gain = f"{res.detect_gain:+.4f}"
    if res.seeds_needed is None:
        return f"a gain of {gain} is not detectable at this spread with any practical number of seeds"
    if res.seeds_needed <= len(res.seeds):
        # enough seeds to find that gain, had it been there: what was seen is smaller
        return f"{res.seeds_needed} seeds would detect {gain} (power 0.8); the observed {res.mean:+.4f} is smaller"
    return f"~{res.seeds_needed} seeds to detect {gain} (power 0.8)"


def comparisons_table(results: StudyResults) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per judged pair, the claim, the means, the mean paired difference, its 95 % interval
    (the repeated interval at the deciding look of a sequential study), the seeds, the verdict and what would
    decide an open claim."""
    interval = "95 % CI" if results.design is None else "95 % CI (sequential)"
    header = ["claim", "where", "metric", "base", "treatment", "mean diff", interval, "seeds", "verdict", "to decide"]
    rows = []
    for comp, context, res in results.comparisons:
        claim = comp.claim or f"{comp.vary}: {comp.treatment} beats {comp.base}"
        ci = "–" if math.isnan(res.low) else f"[{res.low:+.4f}, {res.high:+.4f}]"
        diff = "–" if math.isnan(res.mean) else f"{res.mean:+.4f}"
        seeds = str(len(res.seeds)) + (f" ({res.design})" if res.design != "fixed" else "")
        rows.append(
            [
                claim,
                context,
                comp.metric,
                fmt(res.base_mean),
                fmt(res.treatment_mean),
                diff,
                ci,
                seeds,
                res.verdict,
                what_would_decide(res),
            ]
        )
    return header, rows


def md_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="{_verdict_class(c)}">{html.escape(c)}</td>' for c in row) + "</tr>"
        for row in rows
    )
    # a scroll box: a wide table scrolls sideways on a phone instead of widening the page
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _verdict_class(cell: str) -> str:
    classes = {REPRODUCED: "ok", NOT_REPRODUCED: "bad", INCONCLUSIVE: "unsure", IDENTICAL: "void", COLLAPSED: "void"}
    return classes.get(cell, "")


PROTOCOL_NOTE = (
    "Fair protocol: every arm uses the same code, data, seeds and schedule; each number is the model at the end "
    "of training (no test-set selection); mean ± sample std over seeds. A paired comparison takes the per-seed "
    "difference treatment − base (same seed = same initialisation and batches) and its 95 % t-interval: "
    "reproduced when the whole interval lies above the claimed minimal gain (0 unless stated), not reproduced "
    "when it lies below, inconclusive otherwise (or with fewer than two seeds). Before any interval: "
    "'identical arms' when both arms trained to bit-identical weights at every seed (the treatment changed "
    "nothing), 'collapsed' when an arm's final test embeddings all lie within 0.001 cosine distance of each other. "
    "For an open claim, 'to decide' gives the paired seeds a fixed-size t-test would need to detect the claim's "
    "gain (its gain_to_detect, else the observed mean gain) with power 0.8 at the observed spread."
)

SEQUENTIAL_NOTE = (
    "Sequential study: claims were looked at after {looks} paired seeds and decided at the first look whose "
    "paired t-statistic crossed the O'Brien-Fleming alpha-spending boundary ({bounds}); the interval shown is the "
    "repeated confidence interval at that look. Over all looks a claim with no real gain is declared reproduced "
    "or not reproduced at most 5 % of the time."
)


__all__ = [
    "PROTOCOL_NOTE",
    "SEQUENTIAL_NOTE",
    "comparisons_table",
    "fmt",
    "html_table",
    "md_table",
    "metrics_table",
    "what_would_decide",
]
