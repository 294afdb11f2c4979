"""Where a study run's time goes, with a fresh interpreter per run ("before") and in a persistent worker ("after").

Trains one cell of a study (default: triplet + Symm of ``studies/symm_losses.yaml``, its ``--quick`` variant unless
``--full``) for ``--runs`` seeds, twice:

- **before**: every run in a new Python process (``python benchmarks/study.py --child``), which pays the
  interpreter's start-up and the imports of torch, Lightning and centrum each time;
- **after**: every run in one long-lived process, as a :class:`centrum.study.runner.WorkerPool` worker trains them
  (imports once, then :func:`~centrum.study.runner.execute_run` run after run, each in a fresh process state).

Each run's wall time is split by timers wrapped around the code that does each part (exclusive: a part nested
in another counts once, in the inner one):

- ``start-up``: the interpreter's start (the process's wall time before this script's first line) and the imports;
- ``data``: the training loader (reading, decoding and augmenting images, collating; with loader workers, the wait
  for them) and reading the dataset's index;
- ``step``: ``training_step`` (forward, loss, backward, optimiser steps; on CUDA synchronised at its end, so
  that the GPU's work counts here and not in whatever waits next);
- ``evaluation``: the query/gallery evaluations (``evaluation data``: their image loading);
- ``checkpoints``: ``Trainer.save_checkpoint`` (``last.ckpt`` every N steps and per epoch, the final ``model.ckpt``);
- ``analyses``: the study's callbacks (t-SNE snapshots, ranked lists, final state, step cost), the collapse
  monitor and ``curves.png`` (``analyses data``: their image loading);
- ``setup``: building the model (and loading pretrained weights) and the Lightning trainer;
- ``other``: the rest of the run (Lightning's loop, logging, the run folder's small files).

The study's report (``report``) is timed once per study, after the runs. Usage::

    python benchmarks/study.py                      # quick cell, 2 seeds, CPU
    python benchmarks/study.py --full --epochs 1    # the shipped 48x48 setting, 1 epoch
    python benchmarks/study.py --device cuda        # the same on a GPU (trainer.accelerator=gpu)
"""

from __future__ import annotations

import time

_SCRIPT_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PARTS = (
    "start-up",
    "data",
    "step",
    "evaluation",
    "evaluation data",
    "checkpoints",
    "analyses",
    "analyses data",
    "setup",
    "other",
)


class Split:
    """Exclusive wall-time accounting: time goes to the innermost part being timed."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.stack: list[str] = []
        self.mark = time.perf_counter()

    def enter(self, part: str) -> None:
        now = time.perf_counter()
        if self.stack:
            self.totals[self.stack[-1]] += now - self.mark
            if part == "data" and self.stack[-1] in ("evaluation", "analyses"):
                part = f"{self.stack[-1]} data"
        self.stack.append(part)
        self.mark = now

    def leave(self) -> None:
        now = time.perf_counter()
        self.totals[self.stack.pop()] += now - self.mark
        self.mark = now


SPLIT = Split()


def _wrap(owner: object, name: str, part: str, sync: bool = False) -> None:
    original = getattr(owner, name)

    def timed(*args, **kwargs):
        SPLIT.enter(part)
        try:
            result = original(*args, **kwargs)
            if sync:
                import torch

                torch.cuda.synchronize()
            return result
        finally:
            SPLIT.leave()

    setattr(owner, name, timed)


def _instrument(cuda: bool) -> None:
    """Wrap the functions that do each part of a run with :data:`SPLIT`'s timers."""
    import lightning as L
    from torch.utils.data import dataloader

    import centrum.training.datamodule as datamodule
    import centrum.training.run as run
    from centrum.study.callbacks import EmbeddingSnapshots, FinalState, StepCost
    from centrum.training.callbacks import EvaluateDuringTraining
    from centrum.training.collapse import EmbeddingSpreadMonitor
    from centrum.training.module import RetrievalModule

    _wrap(dataloader._BaseDataLoaderIter, "__next__", "data")
    _wrap(datamodule, "build_dataset", "data")
    _wrap(datamodule, "build_image_cache", "data")  # data.cache: the decode-once pass
    _wrap(datamodule.CachedBatches, "augment", "data")  # data.cache: the batch augmentation on the device
    _wrap(RetrievalModule, "training_step", "step", sync=cuda)
    _wrap(EvaluateDuringTraining, "evaluate", "evaluation")
    _wrap(L.Trainer, "save_checkpoint", "checkpoints")
    _wrap(EmbeddingSnapshots, "_snapshot", "analyses")
    _wrap(FinalState, "on_train_end", "analyses")
    for hook in ("on_train_batch_start", "on_train_batch_end", "on_train_end"):
        _wrap(StepCost, hook, "analyses")
    _wrap(EmbeddingSpreadMonitor, "on_train_epoch_end", "analyses")
    _wrap(run, "write_curves", "analyses")
    import centrum.training.module as module

    for builder in ("build_model_from_config", "build_objective"):  # the module's __init__ is inspected by Lightning
        _wrap(module, builder, "setup")
    _wrap(L.Trainer, "__init__", "setup")


def _load(args: argparse.Namespace):
    from centrum.study import load_study

    overrides = [f"trainer.max_epochs={args.epochs}"] if args.epochs else []
    overrides += list(args.set or [])
    if args.device == "cuda":
        overrides.append("trainer.accelerator=gpu")
    study = load_study(args.study, quick=not args.full, extra_overrides=overrides)
    cells = [c for c in study.cells() if c.label == args.cell]
    if not cells:
        raise SystemExit(f"--cell {args.cell!r} is not a cell of {args.study}: {[c.label for c in study.cells()]}")
    return study, cells[0]


def child(args: argparse.Namespace) -> None:
    """Train ``args.seeds`` of the cell in this process and print one JSON line with the splits."""
    imports_start = time.perf_counter()
    import torch

    import centrum.study.callbacks
    import centrum.training  # noqa: F401
    from centrum.study import plan_runs, write_report
    from centrum.study.runner import execute_run

    imports = time.perf_counter() - imports_start
    _instrument(args.device == "cuda")
    study, cell = _load(args)
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        (run,) = plan_runs(study, args.out, [seed], [cell])
        SPLIT.totals.clear()
        start = SPLIT.mark = time.perf_counter()
        SPLIT.stack = ["other"]
        execute_run(study, run)
        SPLIT.leave()
        runs.append({"seed": seed, "wall": time.perf_counter() - start, **SPLIT.totals})
    report = None
    if args.report:
        import dataclasses

        grids = [{axis: {v: o for v, o in values.items() if v == cell.setting(axis)} for axis, values in g.items()}
                 for g in study.grids]  # fmt: skip
        one_cell = dataclasses.replace(study, grids=grids, comparisons=[], seeds=[r["seed"] for r in runs])
        start = time.perf_counter()
        write_report(one_cell, args.out)
        report = time.perf_counter() - start
    print(
        "SPLIT "
        + json.dumps(
            {
                "script": time.perf_counter() - _SCRIPT_START,
                "imports": imports,
                "runs": runs,
                "report": report,
                "torch": torch.__version__,
                "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
            }
        ),
        flush=True,
    )


def _spawn(args: argparse.Namespace, seeds: list[int], out: Path, report: bool, sets: list[str]) -> tuple[float, dict]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--seeds", ",".join(map(str, seeds))]
    cmd += ["--out", str(out), "--study", str(args.study), "--cell", args.cell, "--device", args.device]
    cmd += ["--full"] if args.full else []
    cmd += ["--epochs", str(args.epochs)] if args.epochs else []
    cmd += ["--report"] if report else []
    for override in sets:
        cmd += ["--set", override]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("SPLIT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"the benchmark's child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, json.loads(lines[-1][len("SPLIT ") :])


def _row(runs: list[dict], start_up: list[float]) -> dict[str, float]:
    """Mean seconds per run of every part, start-up included."""
    row = {part: sum(r.get(part, 0.0) for r in runs) / len(runs) for part in PARTS if part != "start-up"}
    row["start-up"] = sum(start_up) / len(runs)
    row["total"] = sum(row.values())
    return row


def main() -> None:
    """Parse the options; as ``--child`` train in this process, else run the before/after comparison."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", type=Path, default=ROOT / "studies" / "symm_losses.yaml")
    p.add_argument("--cell", default="loss=triplet, symm=true")
    p.add_argument("--full", action="store_true", help="the study's own setting, not its quick variant")
    p.add_argument("--epochs", type=int, default=None, help="override trainer.max_epochs")
    p.add_argument("--runs", type=int, default=2, help="seeds trained in each mode")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="an override for both modes (repeatable)")
    p.add_argument(
        "--before-set",
        action="append",
        metavar="KEY=VALUE",
        help="an override for the 'before' mode only, e.g. trainer.channels_last=false (repeatable)",
    )
    p.add_argument(
        "--after-set",
        action="append",
        metavar="KEY=VALUE",
        help="an override for the 'after' mode only, e.g. data.cache=memory (repeatable)",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seeds", default="0", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--report", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    seeds = list(range(args.runs))
    with tempfile.TemporaryDirectory(prefix="centrum-bench-study-") as tmp:
        before_runs, before_start = [], []
        for seed in seeds:  # a fresh interpreter per run
            before_sets = [*(args.set or []), *(args.before_set or [])]
            wall, got = _spawn(args, [seed], Path(tmp) / "before", seed == seeds[-1], before_sets)
            (run,) = got["runs"]
            before_runs.append(run)
            before_start.append(wall - got["script"] + got["imports"])
            before_report = got["report"]
        after_sets = [*(args.set or []), *(args.after_set or [])]
        wall, after = _spawn(args, seeds, Path(tmp) / "after", True, after_sets)  # one process for every run
        after_start = [wall - after["script"] + after["imports"]]
    rows = {"before": _row(before_runs, before_start), "after": _row(after["runs"], after_start)}
    kind = ("full" if args.full else "quick") + (f", {args.epochs} epoch(s)" if args.epochs else "")
    print(
        f"study run split: {args.study.name} [{args.cell}] ({kind}),"
        f" {args.runs} run(s) per mode, device {after['device']}, torch {after['torch']}, "
        f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}"
    )
    for mode, sets in (("before", args.before_set), ("after", args.after_set)):
        if sets:
            print(f"{mode}: " + ", ".join(sets))
    print(f"{'seconds per run':<18}" + "".join(f"{name:>10}" for name in rows))
    for part in (*PARTS, "total"):
        print(f"{part:<18}" + "".join(f"{rows[name][part]:>10.2f}" for name in rows))
    saving = rows["before"]["total"] - rows["after"]["total"]
    print(
        f"per-run saving: {saving:.2f} s ({saving / rows['before']['total']:.0%} of a run, "
        f"{rows['before']['total'] / rows['after']['total']:.2f}x faster); "
        f"report (once per study): {before_report:.2f} s before, {after['report']:.2f} s after"
    )
    if args.json:
        options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        figures = {"options": options, "rows": rows, "report": [before_report, after["report"]]}
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
