"""Cost of the recipes' losses inside a full training step, side by side with the bare backbone step.

1. CTL recipe: ResNet-50 (last stride 1, BNNeck, 751 classes), a 16 x 4 batch of 256x128 images. A full
   CTL training step (forward, cross-entropy + triplet + center + centroid triplet, backward, Adam step and
   the centers' SGD step) against the bare backbone step on the same batch (forward, a trivial loss on
   the feature, backward, Adam step). Target: the CTL recipe adds at most 10 % (5 % in bf16 on a GPU).
2. Symm recipe (the paper's "negligible cost" claim, methods.md 2.3): GoogLeNet + 512-d embedding,
   64 classes x 2 images, triplet (batch-hard) with and without Symmetrical Synthesis, full step.

Precisions: ``fp32``; ``bf16`` (``torch.autocast`` in bfloat16); ``fp16`` (autocast in float16 with a
``torch.amp.GradScaler``: an overflowing step is skipped by the scaler and counted, never an exception).
On CUDA the backbones and images are channels-last (``--no-channels-last`` to turn it off).

Usage: ``python benchmarks/training.py [--repeats 3] [--device cuda] [--precision fp32,bf16,fp16] [--amp]
[--symm-size 227]``. ``--amp`` runs bf16 and fp16 on CUDA (bf16 on the CPU, where fp16 autocast runs at
reference speed). Prints the median time of each step, images per second and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from centrum.losses import SymmetricalSynthesis, TripletMarginLoss
from centrum.models import build_model
from centrum.training.objectives import CTLObjective
from centrum.validation import trusted_inputs

PRECISIONS = ("fp32", "bf16", "fp16")
BACKBONE_NAMES = {"resnet50": "ResNet-50", "googlenet": "GoogLeNet", "small_cnn": "small CNN"}
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA is asynchronous; the CPU is not)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(step: Callable[[], None], repeats: int, device: torch.device) -> float:
    """Median wall-clock seconds of ``step()`` over ``repeats`` runs after one warm-up run, synchronised."""
    step()  # warm-up (allocations, cudnn autotune)
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass
class StepCounter:
    """Optimiser steps taken and steps the fp16 ``GradScaler`` skipped because a gradient overflowed."""

    taken: int = 0
    skipped: int = 0


def make_step(
    model,
    loss_fn: Callable,
    images,
    labels,
    extra_params=(),
    amp: bool = False,
    precision: str | None = None,
    counter: StepCounter | None = None,
) -> Callable[[], None]:
    """One optimisation step: forward, loss, backward, Adam step (and SGD for ``extra_params``).

    ``precision``: ``"fp32"``, ``"bf16"`` (autocast bfloat16) or ``"fp16"`` (autocast float16 with a
    ``GradScaler``); ``amp=True`` without ``precision`` means fp16 on CUDA and bf16 on the CPU. With fp16 an
    overflowing step is skipped by the scaler (and counted in ``counter``), as mixed-precision training does.
    """
    if precision is None:
        precision = ("fp16" if images.device.type == "cuda" else "bf16") if amp else "fp32"
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = AUTOCAST_DTYPES[precision]
    adam = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=5e-4, fused=True)  # as the training step
    sgd = torch.optim.SGD(list(extra_params), lr=0.5) if extra_params else None
    device_type = images.device.type
    scaler = torch.amp.GradScaler(device_type, enabled=precision == "fp16")
    counter = counter if counter is not None else StepCounter()

    def step() -> None:
        adam.zero_grad(set_to_none=True)
        if sgd is not None:
            sgd.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(images)
            with trusted_inputs():  # as the training step: value checks ran where the batch entered
                loss = loss_fn(out, labels)
        scaler.scale(loss).backward()
        scaler.step(adam)
        if sgd is not None:
            scaler.step(sgd)
        if scaler.is_enabled():
            before = scaler.get_scale()
            scaler.update()
            # the scale only drops when the scaler found an inf/NaN gradient and skipped the step; reading it
            # syncs, which this benchmark's timing does anyway after every step
            counter.skipped += int(scaler.get_scale() < before)
        counter.taken += 1

    return step


@dataclass
class Workload:
    """A model, one batch on the device, and the two losses a benchmark compares on it (bare and recipe)."""

    name: str
    model: torch.nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    bare_loss: Callable
    recipe_loss: Callable
    extra_params: list = field(default_factory=list)

    @property
    def batch(self) -> int:
        """Images per step."""
        return int(self.images.shape[0])


def _on_device(model: torch.nn.Module, images: torch.Tensor, channels_last: bool):
    if channels_last:
        return model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
    return model, images


def ctl_workload(
    device: torch.device,
    p: int = 16,
    m: int = 4,
    size: tuple[int, int] = (256, 128),
    classes: int = 751,
    channels_last: bool = False,
    backbone: str = "resnet50",
) -> Workload:
    """The CTL recipe's step (ResNet-50 BNNeck, ``p`` x ``m`` at ``size``) against the bare backbone step;
    ``backbone`` swaps ResNet-50 for another (``small_cnn`` for a quick CPU check of the code path)."""
    images = torch.randn(p * m, 3, *size, device=device)
    labels = torch.arange(p, device=device).repeat_interleave(m)
    model = build_model(backbone, num_classes=classes, last_stride=1).to(device).train()
    model, images = _on_device(model, images, channels_last)
    objective = CTLObjective(classes, model.feature_dim, batch_layout=(p, m)).to(device)
    return Workload(
        name=f"{BACKBONE_NAMES.get(backbone, backbone)} {p}x{m} {size[0]}x{size[1]}: CTL",
        model=model,
        images=images,
        labels=labels,
        bare_loss=lambda out, _: out["raw"].float().pow(2).mean() + out["logits"].float().mean() * 0,
        recipe_loss=lambda out, y: objective(out, y)["loss"],
        extra_params=list(objective.center_loss.parameters()) if objective.center_loss is not None else [],
    )


def symm_workload(
    device: torch.device,
    p: int = 64,
    m: int = 2,
    size: int = 227,
    channels_last: bool = False,
    backbone: str = "googlenet",
) -> Workload:
    """The Symm recipe's step (GoogLeNet + 512-d, triplet + Symm) against the same step with plain triplet."""
    images = torch.randn(p * m, 3, size, size, device=device)
    labels = torch.arange(p, device=device).repeat_interleave(m)
    model = build_model(backbone, embedding_dim=512, bnneck=False).to(device).train()
    model, images = _on_device(model, images, channels_last)
    triplet = TripletMarginLoss(margin=0.2, mining="hard")
    symm = SymmetricalSynthesis(TripletMarginLoss(margin=0.2, mining="hard"))
    return Workload(
        name=f"{BACKBONE_NAMES.get(backbone, backbone)} {p}x{m} {size}x{size}: triplet+Symm",
        model=model,
        images=images,
        labels=labels,
        bare_loss=lambda out, y: triplet(out["raw"], y, samples_per_class=m),
        recipe_loss=lambda out, y: symm(out["raw"], y, samples_per_class=m),
    )


def time_workload(workload: Workload, precision: str, repeats: int) -> dict[str, float]:
    """Median seconds of the bare and the recipe step of ``workload`` in ``precision``, and the fp16 steps
    the scaler skipped (an overflow is the scaler's to skip, not an error)."""
    device = workload.images.device
    counter = StepCounter()
    bare = make_step(workload.model, workload.bare_loss, workload.images, workload.labels,
                     precision=precision, counter=counter)  # fmt: skip
    recipe = make_step(workload.model, workload.recipe_loss, workload.images, workload.labels,
                       extra_params=workload.extra_params, precision=precision, counter=counter)  # fmt: skip
    t_bare = median_seconds(bare, repeats, device)
    t_recipe = median_seconds(recipe, repeats, device)
    return {"bare_s": t_bare, "recipe_s": t_recipe, "steps": counter.taken, "skipped_steps": counter.skipped}


def row(name: str, base: float, other: float, batch: int) -> str:
    """One printed line: both medians, images per second of each, the ratio and the extra cost in %."""
    extra = 100 * (other / base - 1)
    return (
        f"{name:<42}{base * 1000:>10.1f}{other * 1000:>11.1f}{batch / base:>10.0f}{batch / other:>12.0f}"
        f"{other / base:>8.3f}   ({extra:+.1f} %)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", help="comma-separated subset of " + ",".join(PRECISIONS))
    parser.add_argument("--amp", action="store_true", help="bf16 and fp16 on CUDA, bf16 on the CPU")
    parser.add_argument("--no-channels-last", action="store_true", help="keep NCHW on CUDA")
    parser.add_argument("--symm-size", type=int, default=227, help="input side for the Symm benchmark")
    parser.add_argument("--skip-ctl", action="store_true")
    parser.add_argument("--skip-symm", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    precisions = [p for p in args.precision.split(",") if p]
    if args.amp:
        precisions = ["bf16", "fp16"] if device.type == "cuda" else ["bf16"]
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        parser.error(f"--precision {','.join(unknown)}: choose from {','.join(PRECISIONS)}")
    channels_last = device.type == "cuda" and not args.no_channels_last
    torch.manual_seed(0)
    print(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} repeats={args.repeats} "
        f"precisions={','.join(precisions)} channels_last={channels_last}"
    )
    print(f"{'step':<42}{'bare ms':>10}{'recipe ms':>11}{'bare i/s':>10}{'recipe i/s':>12}{'ratio':>8}")
    workloads = []
    if not args.skip_ctl:
        workloads.append(lambda: ctl_workload(device, channels_last=channels_last))
    if not args.skip_symm:
        workloads.append(lambda: symm_workload(device, size=args.symm_size, channels_last=channels_last))
    for build in workloads:
        workload = build()
        for precision in precisions:
            times = time_workload(workload, precision, args.repeats)
            skipped = f"  [{times['skipped_steps']} fp16 steps skipped]" if times["skipped_steps"] else ""
            print(row(f"{workload.name} {precision}", times["bare_s"], times["recipe_s"], workload.batch) + skipped)
        del workload
    if not args.skip_symm:
        print("  (for Symm, the bare column is the same step with the plain triplet loss)")


if __name__ == "__main__":
    main()
