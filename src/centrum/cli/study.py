"""``centrum study STUDY.yaml --out DIR``: train a grid of configs over seeds and write the study's report."""

from __future__ import annotations

import argparse
from pathlib import Path

from centrum.cli._inputs import HelpFormatter


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``study`` command."""
    p = subparsers.add_parser(
        "study",
        help="run a study (a grid of configs x seeds) and write report.md / report.html",
        description="Run every cell x seed of a study file (see studies/), resumable: finished runs are skipped "
        "and interrupted ones resume. Then write DIR/report.md and a self-contained DIR/report.html with "
        "mean ± std over seeds, paired differences with 95 %% intervals and verdicts, and the pictures.",
        epilog="examples:\n"
        "  centrum study studies/symm_losses.yaml --quick --out runs/study-quick\n"
        "  centrum study studies/ctl.yaml --out runs/study-ctl --jobs 2\n"
        "  centrum study studies/symm_losses.yaml --out runs/gpu --set trainer.accelerator=gpu",
        formatter_class=HelpFormatter,
    )
    p.add_argument("study", type=Path, help="YAML study file")
    p.add_argument("--out", type=Path, default=None, help="study folder (default: studies-out/<study name>)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    p.add_argument("--quick", action="store_true", help="the study's quick variant (its quick: section)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a config field in every cell, e.g. --set trainer.accelerator=gpu (repeatable); "
        "changes the runs' folders, so it never mixes with runs of other settings",
    )
    p.add_argument("--report-only", action="store_true", help="redraw the report from finished runs; train nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the study, run what is unfinished, write the report and print where it is."""
    from centrum.study import load_study, run_study, write_report

    study = load_study(args.study, quick=args.quick, extra_overrides=args.overrides)
    out = args.out or Path("studies-out") / study.name
    if not args.report_only:
        run_study(study, out, jobs=args.jobs)
    md, page = write_report(study, out)
    print(f"report: {page} and {md}")
    return 0
