"""``centrum train CONFIG [overrides]``: train with a published recipe into a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EXAMPLES = """\
examples:
  centrum train configs/fashion_mnist_ctl.yaml
  centrum train fashion_mnist_ctl trainer.max_epochs=2 --out runs/quick
  centrum train fashion_mnist_ctl --out runs/quick --resume      # continue an interrupted run exactly
  centrum train configs/omniglot_triplet_symm.yaml data.root=/data/omniglot --progress plain

CONFIG is a YAML file, or the name of a config (with or without .yaml) looked up in ./configs/, then in
the configs/ folder of the centrum checkout (the shipped recipes), so that names work from any folder.
Overrides are section.field=value (values read as YAML: 1e-3, [40, 70], true) and may come anywhere.
The run folder gets config.yaml, checkpoints/last.ckpt, metrics.csv, curves.png, model.ckpt, results.json.
"""


class _OverridesAnywhere(argparse.ArgumentParser):
    """A parser that takes ``section.field=value`` overrides after options too (``--out DIR a.b=1``)."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        late = [a for a in extras if not a.startswith("-")]  # checked as overrides by load_config
        if late:
            parsed.overrides = [*(getattr(parsed, "overrides", None) or []), *late]
            extras = [a for a in extras if a not in late]
        return parsed, extras


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` command."""
    p = subparsers.add_parser(
        "train",
        help="train an embedding model from a YAML config",
        description="Train an embedding model from a YAML config (see configs/). Overrides use dotted "
        "paths, e.g. `trainer.max_epochs=2 data.p=8 objective.symm=true`.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.__class__ = _OverridesAnywhere  # argparse builds sub-parsers itself; this only adds late overrides
    p.add_argument("config", help="YAML experiment config, or the name of one in ./configs/ or the shipped configs/")
    p.add_argument("overrides", nargs="*", help="section.field=value overrides (default: none)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<config name>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, exactly where it stopped (default: off; "
        "without a run there it stops with an error)",
    )
    p.add_argument(
        "--runs", type=int, default=1, help="repeat with N seeds (seed, seed+1, ...) and report mean ± std (default: 1)"
    )
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "plain", "none"),
        default="auto",
        help="a progress bar, one plain line per epoch and evaluation, or nothing; auto: a bar on a terminal, "
        "plain lines otherwise (default: auto)",
    )
    p.add_argument(
        "--device",
        default=None,
        help="where to train: cpu, cuda (or gpu), mps or auto; sets trainer.accelerator (default: the config's)",
    )
    p.set_defaults(func=run)


def checkout_configs() -> Path | None:
    """The ``configs/`` folder of the centrum checkout this package runs from (``None`` for a wheel install)."""
    import centrum

    folder = Path(centrum.__file__).resolve().parents[2] / "configs"  # src/centrum/__init__.py -> checkout
    return folder if folder.is_dir() else None


def shipped_config_folders() -> list[Path]:
    """Where a config given by name is looked up, in order: ``./configs`` (yours), then the ``configs/`` folder
    of the centrum checkout this package runs from (the shipped recipes)."""
    folders = [Path("configs")]
    checkout = checkout_configs()
    if checkout is not None and checkout != Path("configs").resolve():
        folders.append(checkout)
    return folders


def shipped_configs(folder: Path = Path("configs")) -> list[str]:
    """Names of the YAML configs in ``folder`` (without the suffix), sorted."""
    return sorted(f.stem for f in folder.glob("*.yaml")) if folder.is_dir() else []


def resolve_config(name: str | Path) -> Path:
    """The config file ``name`` means: the path itself, else ``NAME`` or ``NAME.yaml`` in each of
    :func:`shipped_config_folders` (a path ``configs/NAME.yaml`` is looked up there too), so that a shipped
    config works by name from any folder.

    Raises ``FileNotFoundError`` saying where configs are looked up and which exist there.
    """
    path = Path(name)
    if path.is_file():
        return path
    folders = shipped_config_folders()
    # "fashion_mnist_ctl", "fashion_mnist_ctl.yaml" or "configs/fashion_mnist_ctl.yaml"
    by_name = path.parent == Path(".") or (not path.is_absolute() and path.parent == Path("configs"))
    if by_name:
        for folder in folders:
            for candidate in (folder / path.name, folder / f"{path.name}.yaml"):
                if candidate.is_file():
                    return candidate
    listings = []
    for folder in folders:
        shipped = ", ".join(shipped_configs(folder))
        if folder.is_absolute():
            listings.append(f"shipped configs in {folder}: {shipped or 'none'}")
        else:
            listings.append(f"configs in {folder}/: {shipped}" if shipped else f"there is no {folder}/ here")
    if checkout_configs() is None:
        listings.append(
            "this installation has no checkout with the shipped configs/ (they are in the configs/ folder of the "
            "centrum repository): pass the path of a YAML file"
        )
    raise FileNotFoundError(f"config file {path} does not exist; {'; '.join(listings)}")


def run(args: argparse.Namespace) -> int:
    """Load the config, train (N runs), print the final metrics table."""
    from centrum.training import load_config, summarize_runs, train_runs
    from centrum.training.results import format_results_table

    overrides = list(args.overrides)
    if args.device is not None:
        overrides.append(f"trainer.accelerator={args.device}")
    config = load_config(resolve_config(args.config), overrides)
    from centrum.threads import configure_threads

    configure_threads(config.data.num_workers)  # holds up on a shared machine; CENTRUM_THREADS overrides it
    out = args.out or Path("runs") / config.name
    try:
        results = train_runs(config, out, runs=args.runs, resume=args.resume, progress=args.progress)
    except ValueError as exc:  # the library names arguments; on the command line, name the flags
        hint = {
            "already holds a checkpoint": " (pass --resume to continue it, or --out DIR for a new run)",
            "no run to resume": " (drop --resume to start a new run there)",
        }
        raise ValueError(str(exc) + next((h for key, h in hint.items() if key in str(exc)), "")) from exc
    if len(results) == 1:
        print(format_results_table(results[0].metrics, results[0].gallery_classes))
        print(f"run folder: {results[0].run_dir}  model: {results[0].checkpoint}")
    else:
        summary = summarize_runs([r.metrics for r in results])
        last_seed = config.seed + len(results) - 1
        print(f"mean ± standard deviation over {len(results)} runs (seeds {config.seed}..{last_seed})")
        print(format_results_table(summary, results[0].gallery_classes))
        print(f"runs and summary.json in {out}")
    return 0
