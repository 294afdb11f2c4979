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
        "mean ± std over seeds, paired differences with 95 % intervals and verdicts, and the pictures.",
        epilog="examples:\n"
        "  centrum study studies/symm_losses.yaml --quick --out runs/study-quick\n"
        "  centrum study studies/ctl.yaml --out runs/study-ctl --jobs 2\n"
        "  centrum study studies/symm_losses.yaml --out runs/gpu --set trainer.accelerator=gpu\n"
        "  centrum study studies/ctl.yaml --seeds 6 --out runs/study-ctl   # 6 seeds instead of the file's 3\n"
        "  centrum study studies/ctl.yaml --sequential 12 --out runs/ctl-seq  # add seeds to open claims, up to 12\n"
        "  centrum study studies/ctl.yaml --out runs/study-ctl --set data.root=/data/omniglot  # Omniglot elsewhere",
        formatter_class=HelpFormatter,
    )
    p.add_argument("study", type=Path, help="YAML study file")
    p.add_argument("--out", type=Path, default=None, help="study folder (default: studies-out/<study name>)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained at once: JOBS long-lived worker processes that start (import torch) once and then "
        "take run after run; 1 (default) trains in this process",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads of every run (default 1); the same in every worker whatever --jobs, so that "
        "results do not depend on --jobs",
    )
    p.add_argument("--quick", action="store_true", help="the study's quick variant (its quick: section)")
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        metavar="N",
        help="train N seeds per cell: the file's first N, or all of them then the next unused integers",
    )
    p.add_argument(
        "--sequential",
        type=int,
        default=None,
        metavar="MAX",
        help="after the first seeds, keep adding paired seeds to the claims still undecided, up to MAX seeds, "
        "under a group-sequential design that keeps the false-positive rate at 5 %% (see docs/study.md)",
    )
    p.add_argument(
        "--looks",
        default=None,
        metavar="N1,N2,...",
        help="with --sequential: the seed counts at which claims are judged (default: the first seeds, then "
        "about x1.5 each look up to MAX)",
    )
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
    from centrum.study import load_study, run_sequential, run_study, write_report
    from centrum.study.runner import DEFAULT_THREADS

    study = load_study(args.study, quick=args.quick, extra_overrides=args.overrides)
    if args.seeds is not None:
        study = study.with_seeds(args.seeds)
    looks = None
    if args.looks is not None:
        if args.sequential is None:
            raise ValueError("--looks needs --sequential MAX")
        try:
            looks = [int(n) for n in args.looks.split(",")]
        except ValueError:
            raise ValueError(f"--looks must be comma-separated seed counts such as 3,5,8, got {args.looks!r}") from None
    threads = DEFAULT_THREADS if args.threads is None else args.threads
    out = args.out or Path("studies-out") / study.name
    if not args.report_only:
        if args.sequential is not None:
            run_sequential(study, out, args.sequential, looks=looks, jobs=args.jobs, threads=threads)
        else:
            run_study(study, out, jobs=args.jobs, threads=threads)
    md, page = write_report(study, out)
    print(f"report: {page} and {md}")
    return 0
