"""Forward+backward time of every pair-based loss alone, with Symmetrical Synthesis computed from the Gram
matrix (ours), and with the old materialised Symm (every synthetic point built, anchors multiplied against the
whole bank: ``tests/losses/symm_materialised.py``), side by side as ratios to the base loss; and the
vectorised official Centroid Triplet Loss against a per-rotation loop of the same computation.

Run: ``python benchmarks/losses.py [--repeats 40] [--device cpu|cuda] [--no-ctl] [--ops] [--memory]``.
Batches: 64 classes x 2 (the Symm protocol) and 16 x 4 (the CTL re-id protocol), each at D = 512 and D = 2048.
Time: the median of
``--repeats`` runs of ``loss(x, y).backward()``, base / new / old interleaved in a rotating order so that
background load hits all three alike. Both Symm candidate modes: per anchor (``anchor``) and per pair of
classes (``pair``). Memory (``--memory``): on CUDA the peak allocated during one call; on CPU the bytes
autograd saves for the backward pass. Operations (``--ops``): the ATen operations one forward+backward
dispatches, views included, which bound an eager loss's time on small batches whatever the machine's load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from centrum.losses import (
    AngularLoss,
    CentroidTripletLoss,
    ContrastiveLoss,
    LiftedStructureLoss,
    NPairLoss,
    SymmetricalSynthesis,
    TripletMarginLoss,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "losses"))
from symm_materialised import MaterialisedSymm  # the test reference, the "old" column

BASES = {
    "triplet-hard": lambda: TripletMarginLoss(mining="hard"),
    "npair": NPairLoss,
    "lifted": LiftedStructureLoss,
    "angular": AngularLoss,
    "contrastive": ContrastiveLoss,
}
CONFIGS = [(64, 2, 512), (64, 2, 2048), (16, 4, 512), (16, 4, 2048)]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_once(loss, x: torch.Tensor, y: torch.Tensor, device: str) -> float:
    x.grad = None
    sync(device)
    t0 = time.perf_counter()
    loss(x, y).backward()
    sync(device)
    return time.perf_counter() - t0


def interleaved(losses: list, x: torch.Tensor, y: torch.Tensor, device: str, repeats: int) -> list[float]:
    """Median seconds per forward+backward of each loss, timed in a rotating order."""
    for loss in losses:
        for _ in range(3):
            run_once(loss, x, y, device)
    times: list[list[float]] = [[] for _ in losses]
    for r in range(repeats):
        for i in range(len(losses)):
            j = (i + r) % len(losses)
            times[j].append(run_once(losses[j], x, y, device))
    return [statistics.median(t) for t in times]


def memory(loss, x: torch.Tensor, y: torch.Tensor, device: str) -> float:
    """MiB: peak allocated during one call (CUDA), or bytes saved for backward (CPU)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_once(loss, x, y, device)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss(x, y).backward()
    return saved / 2**20


class _OpCounter(TorchDispatchMode):
    """Counts the ATen operations dispatched (views included): a load-independent measure of eager work."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def op_count(loss, x: torch.Tensor, y: torch.Tensor, device: str) -> int:
    """ATen operations in one steady-state forward+backward (after a warm-up call, as in training, where the
    label layout of a batch shape is cached)."""
    loss(x, y).backward()
    x.grad = None
    with _OpCounter() as counter:
        loss(x, y).backward()
    return counter.count


def ctl_per_rotation_loop(x: torch.Tensor, y: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """The official CTL computed as the authors do: a Python loop over rotations, each building its queries
    and leave-one-out centroids and running batch-hard mining (balanced, contiguous P x M batch)."""
    classes = torch.unique(y)
    P, M = classes.numel(), x.shape[0] // classes.numel()
    grouped = x.view(P, M, -1)
    total = x.new_zeros(())
    for r in range(M):
        queries = grouped[:, r]
        keep = torch.arange(M, device=x.device) != r
        centroids = grouped[:, keep].mean(1)
        pts = torch.cat([queries, centroids])
        lab = torch.arange(P, device=x.device).repeat(2)
        d = torch.cdist(pts, pts).clamp_min(1e-6)
        same = lab.unsqueeze(0) == lab.unsqueeze(1)
        d_ap = d.masked_fill(~same, float("-inf")).max(1).values
        d_an = d.masked_fill(same, float("inf")).min(1).values
        total = total + F.relu(d_ap - d_an + margin).mean()
    return total / M


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--memory", action="store_true", help="also print the memory columns")
    parser.add_argument("--ops", action="store_true", help="also print ATen operations per forward+backward")
    parser.add_argument("--ops-only", action="store_true", help="print only the operation counts (no timing)")
    parser.add_argument("--no-ctl", action="store_true", help="skip the CTL section")
    parser.add_argument("--losses", default=",".join(BASES), help="comma-separated subset of " + ",".join(BASES))
    args = parser.parse_args()
    dev = args.device
    names = [n for n in args.losses.split(",") if n]
    torch.manual_seed(0)
    print(f"device={dev} torch={torch.__version__} threads={torch.get_num_threads()} repeats={args.repeats}")
    print("ms = median forward+backward; new = Symm from the Gram matrix, old = materialised Symm; x = / base")
    head = f"{'loss':<14}{'mode':<8}{'base ms':>9}{'new ms':>9}{'old ms':>9}{'new x':>8}{'old x':>8}{'old/new':>9}"
    mem_head = f"{'base MiB':>10}{'new MiB':>10}{'old MiB':>10}" if args.memory else ""
    mem_head += f"{'base ops':>10}{'new ops':>9}{'old ops':>9}" if args.ops else ""
    for P, M, D in CONFIGS:
        N = P * M
        x = torch.randn(N, D, device=dev, requires_grad=True)
        y = torch.arange(P, device=dev).repeat_interleave(M)
        print(f"\nN={N} ({P} classes x {M}), D={D}")
        print(head + mem_head)
        for name in names:
            base = BASES[name]()
            for mode in ("anchor", "pair"):
                new = SymmetricalSynthesis(BASES[name](), candidates=mode)
                old = MaterialisedSymm(BASES[name](), candidates=mode)
                if args.ops_only:
                    counts = [op_count(f, x, y, dev) for f in (base, new, old)]
                    print(f"{name:<14}{mode:<8}ops base {counts[0]:>4}  new {counts[1]:>4}  old {counts[2]:>4}  "
                          f"new/base {counts[1] / counts[0]:.2f}  old/base {counts[2] / counts[0]:.2f}")  # fmt: skip
                    continue
                t_base, t_new, t_old = interleaved([base, new, old], x, y, dev, args.repeats)
                line = (
                    f"{name:<14}{mode:<8}{t_base * 1e3:>9.3f}{t_new * 1e3:>9.3f}{t_old * 1e3:>9.3f}"
                    f"{t_new / t_base:>8.2f}{t_old / t_base:>8.2f}{t_old / t_new:>9.2f}"
                )
                if args.memory:
                    line += "".join(f"{memory(f, x, y, dev):>10.2f}" for f in (base, new, old))
                if args.ops:
                    line += "".join(f"{op_count(f, x, y, dev):>{w}d}" for f, w in ((base, 10), (new, 9), (old, 9)))
                print(line, flush=True)
        if args.no_ctl or args.ops_only:
            continue
        ctl = CentroidTripletLoss(variant="official")
        check = (ctl(x, y) - ctl_per_rotation_loop(x, y)).abs().item()
        t_vec, t_loop = interleaved([ctl, ctl_per_rotation_loop], x, y, dev, args.repeats)
        print(
            f"{'CTL official':<22}vector {t_vec * 1e3:.3f} ms, per-rotation loop {t_loop * 1e3:.3f} ms, "
            f"speedup {t_loop / t_vec:.2f}x (|vector - loop| = {check:.1e})"
        )


if __name__ == "__main__":
    main()
