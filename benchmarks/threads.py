"""One training epoch, quiet and beside a process that keeps every core busy: PyTorch's default thread count
against :func:`centrum.threads.configure_threads`.

Each measurement is a fresh Python process (a thread pool cannot be resized cleanly once it ran) that trains
one epoch of ``--config`` (``--batches`` batches, a whole Fashion-MNIST demo epoch by default) through
``centrum.training.train`` and reports the epoch's time as ``--batches`` x the mean time per batch after the
first; a measurement stops after ``--budget`` seconds of batches, so that a slow condition is extrapolated
rather than waited for (imports, data reading and the evaluation are not counted).
"Loaded" runs start one busy-loop process per usable core first and stop them after. Conditions are
interleaved (quiet default, quiet chosen, loaded default, loaded chosen) and repeated ``--repeats`` times;
the median of each is printed with the ratios loaded/quiet. The load average before each measurement is
printed too: on a machine shared with other work, "quiet" is only as quiet as the others allow.

    python benchmarks/threads.py                  # configs/fashion_mnist_ctl.yaml, 75 batches, 2 repeats
    python benchmarks/threads.py --config configs/fashion_mnist_triplet.yaml --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CENTRUM_THREADS")


def _measure(config_path: str, batches: int, mode: str, budget: float) -> dict:
    """In the child process: choose the threads by ``mode``, train up to ``batches`` batches (stopping after
    ``budget`` seconds), return the epoch's time, from the mean time per batch after the first."""
    import logging
    import warnings

    import lightning as L
    import torch

    from centrum.threads import choose_threads, configure_threads
    from centrum.training import load_config, train

    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    overrides = [
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={batches}",
        "trainer.eval_every=0",
        "trainer.checkpoint_every_n_steps=0",
        # a small test split: the final evaluation is not timed, but it should not cost minutes
        "data.options.max_query_per_class=10",
        "data.options.max_gallery_per_class=10",
    ]
    config = load_config(Path(config_path), overrides)
    if mode == "chosen":
        configure_threads(config.data.num_workers)
        source = choose_threads(config.data.num_workers).describe()
    else:
        source = "PyTorch default"

    class Timer(L.Callback):
        """Seconds per batch after the first (which builds the kernels' primitives); stops at ``budget`` s."""

        start = end = 0.0
        timed = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            now = time.perf_counter()
            if batch_idx == 0:
                self.start = now
                return
            self.end, self.timed = now, batch_idx
            if now - self.start > budget:  # a slow condition is extrapolated rather than waited for
                trainer.should_stop = True

    timer = Timer()
    with tempfile.TemporaryDirectory() as out:
        train(config, Path(out) / "run", progress="none", callbacks=[timer])
    per_batch = (timer.end - timer.start) / max(timer.timed, 1)
    return {
        "seconds": per_batch * batches,
        "batches_timed": timer.timed,
        "threads": torch.get_num_threads(),
        "source": source,
    }


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH", "")]))
    return env


def _run_child(config: str, batches: int, mode: str, budget: float) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--config", config, "--batches", str(batches)]
    cmd += ["--budget", str(budget)]
    timeout = 10 * budget + 300  # imports, data and the final evaluation come on top of the timed batches
    done = subprocess.run(cmd, env=_child_env(), capture_output=True, text=True, timeout=timeout, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"the measurement ({mode}) failed with exit code {done.returncode}:\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


class BusyCores:
    """One ``while True: pass`` process per usable core while the block runs (stopped by their process ids)."""

    def __init__(self, cores: int) -> None:
        self.cores = cores
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> BusyCores:
        self.processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.cores)]
        time.sleep(1.0)  # let the scheduler see them running before the measurement starts
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.processes:
            p.terminate()
        for p in self.processes:
            p.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print a table; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "fashion_mnist_ctl.yaml"))
    parser.add_argument("--batches", type=int, default=75, help="batches of the epoch (the demo's: 75)")
    parser.add_argument("--repeats", type=int, default=2, help="repeats of each condition (the median is kept)")
    parser.add_argument(
        "--budget", type=float, default=20, help="seconds of batches per measurement; slower ones are extrapolated"
    )
    parser.add_argument("--child", choices=("default", "chosen"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(args.config, args.batches, args.child, args.budget)), flush=True)
        return 0

    from centrum.threads import choose_threads, usable_cores

    cores = usable_cores()
    print(
        f"{Path(args.config).name}, {args.batches} batches of one epoch, {cores} usable cores; "
        f"chosen: {choose_threads(0, environ={}).describe()} (for 0 data-loader workers)",
        flush=True,
    )
    times: dict[tuple[str, str], list[float]] = {}
    threads: dict[str, int] = {}
    started = time.perf_counter()
    for repeat in range(args.repeats):
        for load in ("quiet", "loaded"):
            for mode in ("default", "chosen"):
                before = os.getloadavg()[0]
                if load == "loaded":
                    with BusyCores(cores):
                        result = _run_child(args.config, args.batches, mode, args.budget)
                else:
                    result = _run_child(args.config, args.batches, mode, args.budget)
                times.setdefault((load, mode), []).append(result["seconds"])
                threads[mode] = result["threads"]
                print(
                    f"  repeat {repeat + 1}: {load:6s} {mode:7s} {result['threads']} thread(s): "
                    f"{result['seconds']:6.1f} s ({result['batches_timed']} batches timed; "
                    f"load average before: {before:.2f})",
                    flush=True,
                )
    print()
    print("| threads | quiet (s) | beside a busy loop per core (s) | loaded / quiet |")
    print("|---|---:|---:|---:|")
    for mode in ("default", "chosen"):
        quiet, loaded = (statistics.median(times[(load, mode)]) for load in ("quiet", "loaded"))
        label = f"{mode} ({threads[mode]})"
        print(f"| {label} | {quiet:.1f} | {loaded:.1f} | {loaded / quiet:.2f}x |")
    chosen_quiet = statistics.median(times[("quiet", "chosen")])
    default_quiet = statistics.median(times[("quiet", "default")])
    default_loaded = statistics.median(times[("loaded", "default")])
    chosen_loaded = statistics.median(times[("loaded", "chosen")])
    print(
        f"\nquiet: chosen/default {chosen_quiet / default_quiet:.2f}x; loaded: chosen is "
        f"{default_loaded / chosen_loaded:.1f}x faster than default; target loaded/quiet <= 2x for the chosen "
        f"count: {'met' if chosen_loaded <= 2 * chosen_quiet else 'NOT met'}. "
        f"Total {time.perf_counter() - started:.0f} s."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
