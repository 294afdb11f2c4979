"""A study's finished runs read back from their folders, and the claims judged from them.

``collect`` reads every finished run (``results.json``, ``metrics.csv``, ``step_cost.json``, ``final_state.json``)
and judges each comparison on every pair of cells that differ only in the compared axis, paired by seed: with one
t-interval over all seeds, or, when the study folder holds a sequential design (``sequential.json``, written by
``centrum study --sequential``), look by look under that design. Before any statistics, a pair of arms that trained
to identical weights, or an arm whose embeddings collapsed, gets that verdict instead.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from centrum.study.runner import PlannedRun, plan_runs
from centrum.study.sequential import read_design
from centrum.study.spec import Cell, Comparison, Study
from centrum.study.stats import (
    PairedResult,
    paired_comparison,
    sanity_verdict,
    sequential_comparison,
    with_seeds_needed,
)
from centrum.training.callbacks import flatten_metrics


@dataclass
class RunData:
    """What a finished run left: final metrics (``protocol/metric``), its metrics.csv rows, step cost and final
    state (weights digest, embedding spread)."""

    cell: Cell
    seed: int
    run_dir: Path
    metrics: dict[str, float]
    rows: list[dict[str, str]]
    step_cost: dict[str, Any] | None
    final_state: dict[str, Any] | None = None


@dataclass
class StudyResults:
    """The finished runs of a study grouped by cell, plus the paired comparisons judged from them."""

    study: Study
    out_dir: Path
    runs: dict[str, list[RunData]]
    cells: list[Cell]
    comparisons: list[tuple[Comparison, str, PairedResult]] = field(default_factory=list)
    #: the seeds planned, in order (a sequential study's whole seed list)
    seeds: list[int] = field(default_factory=list)
    design: Any = None

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


def _read_run(run: PlannedRun) -> RunData:
    results = json.loads((run.run_dir / "results.json").read_text())
    rows: list[dict[str, str]] = []
    if (run.run_dir / "metrics.csv").is_file():
        with (run.run_dir / "metrics.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
    cost_file = run.run_dir / "step_cost.json"
    cost = json.loads(cost_file.read_text()) if cost_file.is_file() else None
    state_file = run.run_dir / "final_state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else None
    return RunData(run.cell, run.seed, run.run_dir, flatten_metrics(results.get("metrics", {})), rows, cost, state)


def _losses(run: RunData) -> list[str]:
    return [r["train/loss_step"] for r in run.rows if r.get("train/loss_step") not in (None, "")]


def _sanity(results: StudyResults, base: Cell, treatment: Cell, seeds: tuple[int, ...]) -> tuple[str, str] | None:
    """Identical weights at every paired seed, or a collapsed arm (from the runs' ``final_state.json``)."""
    by_seed = {cell.key: {r.seed: r.final_state for r in results.runs.get(cell.key, [])} for cell in (base, treatment)}
    runs = {cell.key: {r.seed: r for r in results.runs.get(cell.key, [])} for cell in (base, treatment)}
    same, spreads = [], {base.key: [], treatment.key: []}
    for seed in seeds:
        a, b = by_seed[base.key].get(seed), by_seed[treatment.key].get(seed)
        if a and b and a.get("weights_sha256") and b.get("weights_sha256"):
            same.append(a["weights_sha256"] == b["weights_sha256"])
        else:  # runs from before final_state.json: the same loss at every logged step and the same final metrics
            ra, rb = runs[base.key].get(seed), runs[treatment.key].get(seed)
            same.append(bool(ra and rb and ra.metrics == rb.metrics and _losses(ra) and _losses(ra) == _losses(rb)))
    for cell in (base, treatment):
        for seed in seeds:
            state = by_seed[cell.key].get(seed) or {}
            value = state.get("max_pairwise_cosine_distance")
            if value is None:
                spreads[cell.key] = []  # unknown for some seed: no collapse verdict on partial evidence
                break
            spreads[cell.key].append(float(value))
    return sanity_verdict(same, spreads[base.key], spreads[treatment.key])


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
                options = {"metric": comp.metric, "min_gain": comp.min_gain, "higher_is_better": comp.higher_is_better}
                if results.design is not None:
                    paired = sequential_comparison(
                        base_values, treatment_values, results.design, results.seeds, **options
                    )
                else:
                    paired = paired_comparison(base_values, treatment_values, **options)
                sanity = _sanity(results, cell, partner, paired.seeds) if paired.seeds else None
                if sanity is not None:
                    paired = replace(paired, verdict=sanity[0], note=sanity[1])
                elif paired.verdict == "inconclusive":
                    paired = with_seeds_needed(paired, comp.gain_to_detect, comp.min_gain)
                judged.append((comp, context, paired))
    return judged


def collect(study: Study, out_dir: str | Path) -> StudyResults:
    """Read every finished run of ``study`` under ``out_dir`` and judge the comparisons (under the folder's
    sequential design, when it has one)."""
    out_dir = Path(out_dir)
    design, seeds = read_design(out_dir)
    seeds = seeds if design is not None else list(study.seeds)
    runs: dict[str, list[RunData]] = {}
    for run in plan_runs(study, out_dir, seeds=seeds):
        if run.finished:
            runs.setdefault(run.cell.key, []).append(_read_run(run))
    results = StudyResults(study, out_dir, runs, study.cells(), seeds=seeds, design=design)
    results.comparisons = judge(results)
    return results


__all__ = ["RunData", "StudyResults", "collect", "judge"]
