"""``centrum train CONFIG [overrides]``: train with a published recipe into a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` command."""
    p = subparsers.add_parser(
        "train",
        help="train an embedding model from a YAML config",
        description="Train an embedding model from a YAML config (see configs/). Overrides use dotted "
        "paths, e.g. `trainer.max_epochs=2 data.p=8 objective.symm=true`.",
    )
    p.add_argument("config", type=Path, help="YAML experiment config")
    p.add_argument("overrides", nargs="*", help="section.field=value overrides")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--runs", type=int, default=1, help="repeat with N seeds (seed, seed+1, ...) and report mean ± std")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the config, train (N runs), print the final metrics table."""
    from centrum.evaluation import format_metrics_table
    from centrum.training import load_config, summarize_runs, train_runs

    config = load_config(args.config, args.overrides)
    out = args.out or Path("runs") / config.name
    results = train_runs(config, out, runs=args.runs, resume=args.resume)
    if len(results) == 1:
        print(format_metrics_table(results[0].metrics))
        print(f"run folder: {results[0].run_dir}  model: {results[0].checkpoint}")
    else:
        summary = summarize_runs([r.metrics for r in results])
        for protocol, metrics in summary.items():
            print(
                f"{protocol} over {len(results)} runs: "
                + ", ".join(f"{m} {mean:.4f} ± {std:.4f}" for m, (mean, std) in metrics.items())
            )
        print(f"runs and summary.json in {out}")
    return 0
