"""Sequential studies: keep adding paired seeds to the claims still undecided, up to a maximum, with the overall
false-positive rate kept at 5 % by a group-sequential design (:class:`centrum.study.stats.SequentialDesign`).

``centrum study FILE --sequential MAX`` plans the looks before any run (from the file's seed count up to ``MAX``,
each about 1.5 times the previous; or ``--looks 3,5,8,12``) and writes them with the seed order into the study
folder's ``sequential.json``. At each look every claim still undecided gets its two arms trained up to that look's
seed count; a claim decided at a look keeps that verdict, whatever later seeds (added for other claims that share
its cells) would say, because the report replays the same looks in the same order. A folder's design cannot be
changed once written: choosing the looks after seeing results would void the error rate.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from centrum.io import atomic_write_json
from centrum.study.spec import Study, extended_seeds
from centrum.study.stats import INCONCLUSIVE, SequentialDesign, default_looks, sequential_design

if TYPE_CHECKING:
    from centrum.study.runner import WorkerPool

DESIGN_FILE = "sequential.json"


def read_design(out_dir: str | Path) -> tuple[SequentialDesign | None, list[int]]:
    """The design and seed order a sequential study wrote into ``out_dir``, or ``(None, [])``."""
    path = Path(out_dir) / DESIGN_FILE
    if not path.is_file():
        return None, []
    try:
        data = json.loads(path.read_text())
        design = sequential_design(data["looks"], float(data.get("alpha", 0.05)))
        seeds = [int(s) for s in data["seeds"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a sequential design written by centrum study: {exc}") from exc
    return design, seeds


def plan_design(study: Study, max_seeds: int, looks: list[int] | None = None) -> tuple[SequentialDesign, list[int]]:
    """The design (looks from the study's seed count to ``max_seeds``, unless ``looks`` are given) and the
    seed order: the study's seeds, then new ones."""
    looks = looks or default_looks(len(study.seeds), max_seeds)
    if looks[0] != len(study.seeds):
        raise ValueError(f"the first look must be the study's {len(study.seeds)} seeds, got looks {looks}")
    design = sequential_design(looks)
    return design, extended_seeds(study.seeds, design.looks[-1])


def run_sequential(
    study: Study,
    out_dir: str | Path,
    max_seeds: int,
    looks: list[int] | None = None,
    jobs: int = 1,
    log: Callable[[str], None] | None = None,
    **run_options,
) -> SequentialDesign:
    """Run ``study`` look by look (see the module doc) into ``out_dir``; returns the design. With ``jobs`` above 1
    one :class:`~centrum.study.runner.WorkerPool` trains every look's runs (its workers start once per study)."""
    from centrum.study.runner import WorkerPool

    with WorkerPool(jobs) if jobs > 1 else contextlib.nullcontext() as pool:
        return _run_looks(study, out_dir, max_seeds, looks, jobs, log, pool, run_options)


def _run_looks(
    study: Study,
    out_dir: str | Path,
    max_seeds: int,
    looks: list[int] | None,
    jobs: int,
    log: Callable[[str], None] | None,
    pool: WorkerPool | None,
    run_options: dict,
) -> SequentialDesign:
    from centrum.study.results import collect
    from centrum.study.runner import plan_runs, run_study

    log = log or (lambda line: print(line, flush=True))
    out_dir = Path(out_dir)
    design, seeds = plan_design(study, max_seeds, looks)
    existing, existing_seeds = read_design(out_dir)
    if existing is not None and (existing.looks != design.looks or existing_seeds != seeds):
        raise ValueError(
            f"{out_dir / DESIGN_FILE} holds looks {list(existing.looks)} (seeds {existing_seeds}); this run asks for "
            f"looks {list(design.looks)}. A design is fixed before the data: use those looks or another --out"
        )
    study.check_data()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / DESIGN_FILE, {**design.to_dict(), "seeds": seeds})
    log(
        f"sequential design: looks at {list(design.looks)} seeds, |t| boundaries "
        + ", ".join(f"{b:.3g}" for b in design.boundaries)
        + f" (overall false-positive rate {design.alpha:g})"
    )
    cells = study.cells()
    for k, n in enumerate(design.looks):
        if k > 0:
            results = collect(study, out_dir)
            open_keys: set[str] = set()
            for comp, context, paired in results.comparisons:
                if paired.verdict == INCONCLUSIVE:
                    for cell in cells:  # the two arms of this judged pair
                        others = ", ".join(f"{a.split('.')[-1]}={v}" for a, v in cell.settings if a != comp.vary)
                        if (others or "all") == context and cell.setting(comp.vary) in (comp.base, comp.treatment):
                            open_keys.add(cell.key)
            cells = [c for c in cells if c.key in open_keys]
            if not cells:
                log(f"look {k}: every claim decided; no more seeds needed")
                break
            log(f"look {k + 1}/{len(design.looks)}: {len(cells)} cell(s) of undecided claims go to {n} seeds")
        plan = plan_runs(study, out_dir, seeds[:n], cells)
        run_study(study, out_dir, jobs=jobs, log=log, plan=plan, pool=pool, **run_options)
    return design


__all__ = ["DESIGN_FILE", "plan_design", "read_design", "run_sequential"]
