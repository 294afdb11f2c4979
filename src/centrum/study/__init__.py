"""Studies: run a grid of configs over seeds with the fair protocol and report means, intervals and verdicts.

``load_study`` reads a study file, ``run_study`` trains every cell x seed (resumable, in parallel in a
:class:`WorkerPool` of long-lived workers),
``run_sequential`` adds paired seeds to undecided claims under a group-sequential design, and ``write_report``
writes ``report.md`` and a self-contained ``report.html``. Imports training, never the reverse.
"""

from centrum.study.report import collect, write_report
from centrum.study.runner import PlannedRun, WorkerPool, fresh_run_state, plan_runs, run_study
from centrum.study.sequential import run_sequential
from centrum.study.spec import Cell, Comparison, Study, load_study, study_from_dict
from centrum.study.stats import (
    COLLAPSED,
    IDENTICAL,
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    PairedResult,
    SequentialDesign,
    mean_std,
    paired_comparison,
    seeds_needed,
    sequential_comparison,
    sequential_design,
    t_interval,
    verdict,
)

__all__ = [
    "COLLAPSED",
    "IDENTICAL",
    "INCONCLUSIVE",
    "NOT_REPRODUCED",
    "REPRODUCED",
    "Cell",
    "Comparison",
    "PairedResult",
    "PlannedRun",
    "SequentialDesign",
    "Study",
    "WorkerPool",
    "collect",
    "fresh_run_state",
    "load_study",
    "mean_std",
    "paired_comparison",
    "plan_runs",
    "run_sequential",
    "run_study",
    "seeds_needed",
    "sequential_comparison",
    "sequential_design",
    "study_from_dict",
    "t_interval",
    "verdict",
    "write_report",
]
