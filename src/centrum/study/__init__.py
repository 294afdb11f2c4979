"""Studies: run a grid of configs over seeds with the fair protocol and report means, intervals and verdicts.

``load_study`` reads a study file, ``run_study`` trains every cell x seed (resumable, in parallel), and
``write_report`` writes ``report.md`` and a self-contained ``report.html``. Imports training, never the reverse.
"""

from centrum.study.report import collect, write_report
from centrum.study.runner import PlannedRun, plan_runs, run_study
from centrum.study.spec import Cell, Comparison, Study, load_study, study_from_dict
from centrum.study.stats import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    PairedResult,
    mean_std,
    paired_comparison,
    t_interval,
    verdict,
)

__all__ = [
    "INCONCLUSIVE",
    "NOT_REPRODUCED",
    "REPRODUCED",
    "Cell",
    "Comparison",
    "PairedResult",
    "PlannedRun",
    "Study",
    "collect",
    "load_study",
    "mean_std",
    "paired_comparison",
    "plan_runs",
    "run_study",
    "study_from_dict",
    "t_interval",
    "verdict",
    "write_report",
]
