"""Forward+backward time and memory of every pair-based loss with and without Symmetrical Synthesis, and
of the vectorised Centroid Triplet Loss against a per-rotation loop of the same computation.

Run: ``python benchmarks/losses.py [--repeats 30] [--device cpu|cuda]``. Batches: N=128, D=512 (64 classes x 2,
the Symm protocol) and N=64, D=2048 (16 classes x 4, the CTL re-id protocol). Time is the median of
``--repeats`` runs of ``loss(x, y).backward()``. Memory: on CUDA the peak allocated during the call; on CPU
the bytes autograd saves for the backward pass (the activation memory the loss adds to a training step).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from centrum.losses import (
    AngularLoss,
    CentroidTripletLoss,
    ContrastiveLoss,
    LiftedStructureLoss,
    NPairLoss,
    SymmetricalSynthesis,
    TripletMarginLoss,
)

BASES = {
    "contrastive": ContrastiveLoss,
    "triplet-hard": lambda: TripletMarginLoss(mining="hard"),
    "triplet-semihard": lambda: TripletMarginLoss(mining="semihard"),
    "npair": NPairLoss,
    "lifted": LiftedStructureLoss,
    "angular": AngularLoss,
}
CONFIGS = [(64, 2, 512), (16, 4, 2048)]


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


def measure(loss, x: torch.Tensor, y: torch.Tensor, device: str, repeats: int) -> tuple[float, float]:
    """Median seconds per forward+backward and memory in MiB (see the module docstring)."""
    for _ in range(3):
        run_once(loss, x, y, device)
    times = [run_once(loss, x, y, device) for _ in range(repeats)]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_once(loss, x, y, device)
        mem = torch.cuda.max_memory_allocated() - base
    else:
        saved = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal saved
            saved += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss(x, y).backward()
        mem = saved
    return statistics.median(times), mem / 2**20


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
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    dev = args.device
    torch.manual_seed(0)
    print(f"device={dev} torch={torch.__version__} threads={torch.get_num_threads()} repeats={args.repeats}")
    mem_name = "peak MiB" if dev == "cuda" else "saved MiB"
    for P, M, D in CONFIGS:
        N = P * M
        x = torch.randn(N, D, device=dev, requires_grad=True)
        y = torch.arange(P, device=dev).repeat_interleave(M)
        print(f"\nN={N} ({P} classes x {M}), D={D}")
        print(f"{'loss':<18}{'base ms':>10}{'symm ms':>10}{'ratio':>8}{'base ' + mem_name:>16}{'symm ' + mem_name:>16}")
        for name, make in BASES.items():
            t_base, m_base = measure(make(), x, y, dev, args.repeats)
            t_symm, m_symm = measure(SymmetricalSynthesis(make()), x, y, dev, args.repeats)
            print(
                f"{name:<18}{t_base * 1e3:>10.3f}{t_symm * 1e3:>10.3f}{t_symm / t_base:>8.2f}"
                f"{m_base:>16.2f}{m_symm:>16.2f}"
            )
        ctl = CentroidTripletLoss(variant="official")
        check = (ctl(x, y) - ctl_per_rotation_loop(x, y)).abs().item()
        t_vec, m_vec = measure(ctl, x, y, dev, args.repeats)
        t_loop, m_loop = measure(ctl_per_rotation_loop, x, y, dev, args.repeats)
        print(
            f"{'CTL official':<18}{'vector ms':>10}{'loop ms':>10}{'speedup':>8}{'vector ' + mem_name:>18}"
            f"{'loop ' + mem_name:>16}"
        )
        print(
            f"{'':<18}{t_vec * 1e3:>10.3f}{t_loop * 1e3:>10.3f}{t_loop / t_vec:>8.2f}{m_vec:>18.2f}{m_loop:>16.2f}"
            f"   (|vector - loop| = {check:.1e})"
        )


if __name__ == "__main__":
    main()
