"""Cost of the recipes' losses inside a full training step, side by side with the bare backbone step.

1. CTL recipe: ResNet-50 (last stride 1, BNNeck, 751 classes), a 16 x 4 batch of 256x128 images. A full
   CTL training step (forward, cross-entropy + triplet + center + centroid triplet, backward, Adam step and
   the centers' SGD step) against the bare backbone step on the same batch (forward, a trivial loss on
   the feature, backward, Adam step). Target: the CTL recipe adds at most 10 %.
2. Symm recipe (the paper's "negligible cost" claim, methods.md 2.3): GoogLeNet + 512-d embedding,
   64 classes x 2 images, triplet (batch-hard) with and without Symmetrical Synthesis, full step.

Usage: ``python benchmarks/training.py [--repeats 3] [--device cuda] [--symm-size 227]``. Prints the median
time of each step and the ratio. Runs on the GPU when one is visible (also with ``--amp``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from centrum.losses import SymmetricalSynthesis, TripletMarginLoss
from centrum.models import build_model
from centrum.training.objectives import CTLObjective


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(step: Callable[[], None], repeats: int, device: torch.device) -> float:
    step()  # warm-up (allocations, cudnn autotune)
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_step(model, loss_fn: Callable, images, labels, extra_params=(), amp: bool = False) -> Callable[[], None]:
    """One optimisation step: forward, loss, backward, Adam step (and SGD for ``extra_params``)."""
    adam = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=5e-4)
    sgd = torch.optim.SGD(list(extra_params), lr=0.5) if extra_params else None
    device_type = images.device.type

    def step() -> None:
        adam.zero_grad(set_to_none=True)
        if sgd is not None:
            sgd.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=torch.float16 if device_type == "cuda" else torch.bfloat16, enabled=amp):
            out = model(images)
            loss = loss_fn(out, labels)
        loss.backward()
        adam.step()
        if sgd is not None:
            sgd.step()

    return step


def row(name: str, base: float, other: float) -> str:
    extra = 100 * (other / base - 1)
    return f"{name:<34}{base * 1000:>12.1f}{other * 1000:>12.1f}{other / base:>9.3f}   ({extra:+.1f} %)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="mixed precision (fp16 on CUDA, bf16 on CPU)")
    parser.add_argument("--symm-size", type=int, default=227, help="input side for the Symm benchmark")
    parser.add_argument("--skip-ctl", action="store_true")
    parser.add_argument("--skip-symm", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} repeats={args.repeats} "
        f"amp={args.amp}"
    )
    print(f"{'step':<34}{'bare ms':>12}{'recipe ms':>12}{'ratio':>9}")

    if not args.skip_ctl:
        P, M, classes = 16, 4, 751
        images = torch.randn(P * M, 3, 256, 128, device=device)
        labels = torch.arange(P, device=device).repeat_interleave(M)
        model = build_model("resnet50", num_classes=classes, last_stride=1).to(device).train()
        bare = make_step(
            model, lambda out, _: out["raw"].pow(2).mean() + out["logits"].mean() * 0, images, labels, amp=args.amp
        )
        objective = CTLObjective(classes, model.feature_dim).to(device)
        ctl = make_step(
            model,
            lambda out, y: objective(out, y)["loss"],
            images,
            labels,
            extra_params=list(objective.center_loss.parameters()),
            amp=args.amp,
        )
        t_bare = median_seconds(bare, args.repeats, device)
        t_ctl = median_seconds(ctl, args.repeats, device)
        print(row("ResNet-50 16x4 256x128: CTL", t_bare, t_ctl))

    if not args.skip_symm:
        P, M, s = 64, 2, args.symm_size
        images = torch.randn(P * M, 3, s, s, device=device)
        labels = torch.arange(P, device=device).repeat_interleave(M)
        model = build_model("googlenet", embedding_dim=512, bnneck=False).to(device).train()
        triplet = TripletMarginLoss(margin=0.2, mining="hard")
        symm = SymmetricalSynthesis(TripletMarginLoss(margin=0.2, mining="hard"))
        base_step = make_step(model, lambda out, y: triplet(out["raw"], y), images, labels, amp=args.amp)
        symm_step = make_step(model, lambda out, y: symm(out["raw"], y), images, labels, amp=args.amp)
        t_base = median_seconds(base_step, args.repeats, device)
        t_symm = median_seconds(symm_step, args.repeats, device)
        print(row(f"GoogLeNet 64x2 {s}x{s}: triplet+Symm", t_base, t_symm))
        print("  (for Symm, the bare column is the same step with the plain triplet loss)")


if __name__ == "__main__":
    main()
