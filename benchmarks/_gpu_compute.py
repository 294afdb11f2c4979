"""The in-process sections of ``benchmarks/gpu.py``: the pair losses (eager and compiled, with and without
Symm), the two training steps in three precisions, and the evaluation protocols at the datasets' sizes.

Each section takes the run's :class:`~_gpu_common.Context` and fills a :class:`~_gpu_common.SectionResult`
row by row, so that what it measured survives a later failure. Importing this module runs nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

import training as training_bench  # benchmarks/training.py: the step timings and workloads
from _gpu_common import Context, SectionResult, first_line
from centrum.losses import build_loss
from centrum.validation import trusted_inputs
from evaluation import clustered, reid_sets  # benchmarks/evaluation.py: the synthetic embeddings

# The five pair losses as build_loss names them; triplet with batch-hard mining, as in the Symm protocol.
PAIR_LOSSES: dict[str, dict] = {
    "contrastive": {},
    "triplet": {"mining": "hard"},
    "npair": {},
    "lifted": {},
    "angular": {},
}
VARIANTS: tuple[tuple[str, str | None], ...] = (
    ("base", None),
    ("symm per anchor", "anchor"),
    ("symm per pair", "pair"),
)
SYMM_RATIO_TARGETS = {"anchor": 1.05, "pair": 1.3}
PAPER_NOTE = (
    "reference: the Symm paper's TensorFlow N-pair loss on a Tesla P40, forward 0.2454 ms, with Symm 0.2497 ms "
    "(1.018x); targets (GPU): compiled forward <= 0.25 ms, forward+backward <= 0.5 ms, Symm/base <= 1.05x per "
    "anchor and <= 1.3x per pair, forward+backward (compiled figures when compiling worked, else eager)"
)


def _sync(ctx: Context) -> None:
    training_bench.sync(torch.device(ctx.device))


class _TrainingCall(torch.nn.Module):
    """A batch loss called as the training step calls it: told the P x M layout, value checks off."""

    def __init__(self, loss: torch.nn.Module, samples_per_class: int) -> None:
        super().__init__()
        self.loss, self.samples_per_class = loss, samples_per_class

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with trusted_inputs():
            return self.loss(x, y, samples_per_class=self.samples_per_class)


def pair_loss(name: str, candidates: str | None, samples_per_class: int = 2) -> torch.nn.Module:
    """The pair loss ``name`` through the public ``build_loss``, wrapped in Symm (``candidates`` = anchor or
    pair) unless ``candidates`` is None, called on class-major P x M batches as in training."""
    options = PAIR_LOSSES[name]
    if candidates is None:
        loss = build_loss(name, **options)
    else:
        loss = build_loss(name, symm=True, symm_options={"candidates": candidates}, **options)
    return _TrainingCall(loss, samples_per_class)


def loss_times(fn: Callable, x: torch.Tensor, y: torch.Tensor, ctx: Context, repeats: int) -> tuple[float, float]:
    """Median seconds of ``fn(x, y)`` (forward, with ``x`` requiring grad as in training) and of the forward
    plus ``.backward()``, after warm-up; every call synchronised."""
    graphs = ctx.cuda and ctx.compile_mode == "reduce-overhead"

    def forward() -> None:
        if graphs:  # CUDA graphs: a new step may overwrite the previous step's outputs
            torch.compiler.cudagraph_mark_step_begin()
        fn(x, y)

    def forward_backward() -> None:
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        x.grad = None
        fn(x, y).backward()

    for _ in range(3):
        forward_backward()
    device = torch.device(ctx.device)
    return training_bench.median_seconds(forward, repeats, device), training_bench.median_seconds(
        forward_backward, repeats, device
    )


def _compile(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: Context) -> tuple[Callable, float]:
    """``torch.compile(module, fullgraph=True)`` and its first forward+backward (the compilation), timed."""
    # a quick CPU run checks that the whole graph is captured without paying for C++ code generation
    backend = "aot_eager" if ctx.quick and not ctx.cuda else "inductor"
    mode = ctx.compile_mode if backend == "inductor" and ctx.compile_mode != "default" else None
    torch._dynamo.reset()  # each loss compiled afresh: no recompilation limits shared between losses
    fn = torch.compile(module, fullgraph=True, backend=backend, mode=mode)
    start = time.perf_counter()
    fn(x, y).backward()
    _sync(ctx)
    return fn, time.perf_counter() - start


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 4)


def losses(ctx: Context, result: SectionResult) -> None:
    """Every pair loss with and without Symm, eager and compiled: forward and forward+backward ms."""
    P, M, D = (8, 2, 32) if ctx.quick else (64, 2, 512)
    repeats = 3 if ctx.quick else 50
    # a quick run compiles two (a compilation takes seconds even with the aot_eager backend)
    to_compile = {("triplet", None), ("triplet", "anchor")} if ctx.quick else None
    torch.manual_seed(0)
    x = torch.randn(P * M, D, device=ctx.device, requires_grad=True)
    y = torch.arange(P, device=ctx.device).repeat_interleave(M)
    result.notes.append(
        f"batch {P} classes x {M} images, D = {D}; median of {repeats} synchronised calls after warm-up; "
        f"compile: torch.compile(loss, fullgraph=True), mode {ctx.compile_mode}"
        + (", backend aot_eager (quick CPU run: graph capture only)" if ctx.quick and not ctx.cuda else "")
    )
    result.notes.append(PAPER_NOTE)
    result.columns = [
        "loss",
        "variant",
        "eager_fwd_ms",
        "eager_fwd_bwd_ms",
        "compiled_fwd_ms",
        "compiled_fwd_bwd_ms",
        "compile_s",
        "compiled_minus_eager",
        "symm_over_base_eager",
        "symm_over_base_compiled",
        "target",
        "met",
    ]
    for name in PAIR_LOSSES:
        base: dict[str, float | None] = {}
        for variant, candidates in VARIANTS:
            row: dict = {"loss": name, "variant": variant}
            result.rows.append(row)
            if ctx.time_left() < 5:
                row["met"] = "skipped: out of time"
                continue
            try:
                module = pair_loss(name, candidates, M)
                fwd, fwd_bwd = loss_times(module, x, y, ctx, repeats)
                row.update(eager_fwd_ms=_ms(fwd), eager_fwd_bwd_ms=_ms(fwd_bwd))
            except Exception as exc:  # one loss failing must not hide the others
                row["met"] = f"error: {first_line(exc)}"
                ctx.log(f"losses: {name} {variant}: {row['met']}")
                continue
            c_fwd = c_fwd_bwd = None
            if to_compile is not None and (name, candidates) not in to_compile:
                row["compiled_fwd_ms"] = "not compiled in --quick"
            elif ctx.time_left() < (10 if ctx.quick else 40):
                row["compiled_fwd_ms"] = "compile skipped: out of time"
            else:
                try:
                    fn, compile_s = _compile(module, x, y, ctx)
                    row["compile_s"] = round(compile_s, 2)
                except Exception as exc:
                    row["compiled_fwd_ms"] = f"compile failed: {first_line(exc)}"
                else:
                    try:
                        c_fwd, c_fwd_bwd = loss_times(fn, x, y, ctx, repeats)
                        row.update(compiled_fwd_ms=_ms(c_fwd), compiled_fwd_bwd_ms=_ms(c_fwd_bwd))
                        # with grad enabled, as compiled: under no_grad the compiled loss would recompile
                        if ctx.cuda and ctx.compile_mode == "reduce-overhead":
                            torch.compiler.cudagraph_mark_step_begin()
                        row["compiled_minus_eager"] = float((fn(x, y).detach() - module(x, y).detach()).abs())
                    except Exception as exc:
                        row["compiled_fwd_ms"] = f"compiled run failed: {first_line(exc)}"
                        c_fwd = c_fwd_bwd = None
                torch._dynamo.reset()
            if candidates is None:
                base = {"eager": fwd_bwd, "compiled": c_fwd_bwd}
            else:
                if base.get("eager"):
                    row["symm_over_base_eager"] = round(fwd_bwd / base["eager"], 3)
                if c_fwd_bwd is not None and base.get("compiled"):
                    row["symm_over_base_compiled"] = round(c_fwd_bwd / base["compiled"], 3)
            checks = [("fwd ms", _ms(c_fwd), "<=", 0.25), ("fwd+bwd ms", _ms(c_fwd_bwd), "<=", 0.5)]
            if candidates is not None:
                which = "compiled" if "symm_over_base_compiled" in row else "eager"
                checks.append(
                    (f"Symm/base {which}", row.get(f"symm_over_base_{which}"), "<=", SYMM_RATIO_TARGETS[candidates])
                )
            row["target"], row["met"] = ctx.gpu_target(checks)
            compiled = (
                f"fwd {row['compiled_fwd_ms']:.3f} ms, fwd+bwd {row['compiled_fwd_bwd_ms']:.3f} ms"
                if c_fwd_bwd is not None
                else str(row.get("compiled_fwd_ms"))
            )
            ctx.log(
                f"losses: {name:<11} {variant:<15} eager fwd {row['eager_fwd_ms']:.3f} ms, fwd+bwd "
                f"{row['eager_fwd_bwd_ms']:.3f} ms | compiled: {compiled}"
            )


def training_geometry(quick: bool) -> dict[str, dict]:
    """Batch and input size of the two training workloads (tiny with ``quick``, so that a CPU runs them)."""
    if quick:  # the small CNN: the code path in seconds on a CPU
        return {
            "CTL": {"p": 2, "m": 2, "size": (32, 16), "backbone": "small_cnn"},
            "Symm": {"p": 4, "m": 2, "size": 32, "backbone": "small_cnn"},
        }
    return {"CTL": {"p": 16, "m": 4, "size": (256, 128)}, "Symm": {"p": 64, "m": 2, "size": 227}}


def bare_images_per_second(ctx: Context, precision: str) -> float:
    """Images per second of the bare ResNet-50 step at the CTL batch in ``precision`` (channels-last on CUDA):
    from the training section when it ran, else measured now."""
    key = f"ctl_bare_images_per_s/{precision}"
    if key not in ctx.shared:
        workload = training_bench.ctl_workload(
            torch.device(ctx.device), **training_geometry(ctx.quick)["CTL"], channels_last=ctx.cuda
        )
        times = training_bench.time_workload(workload, precision, 1 if ctx.quick else 20)
        ctx.shared[key] = workload.batch / times["bare_s"]
    return ctx.shared[key]


def _adaptive_times(
    workload: training_bench.Workload, precision: str, repeats: int, ctx: Context, rows_so_far: int
) -> dict[str, float]:
    """``time_workload`` with as many repeats (up to ``repeats``) as the section's time allows, judged from one
    probe round: a slow machine (a CPU at full size) gets fewer repeats, not an overrun budget."""
    times = training_bench.time_workload(workload, precision, 1)
    per_round = times["bare_s"] + times["recipe_s"]
    rounds = 2 * len(training_bench.PRECISIONS) - rows_so_far + 1  # this one and those after it
    fits = int(ctx.time_left() / max(rounds, 1) / (1.5 * per_round)) - 2  # each call adds one warm-up step
    if min(repeats, fits) > 1:
        times = training_bench.time_workload(workload, precision, min(repeats, fits))
    return {**times, "repeats": max(1, min(repeats, fits))}


def training_steps(ctx: Context, result: SectionResult) -> None:
    """The CTL step against the bare ResNet-50 step and triplet+Symm against triplet (GoogLeNet), in fp32,
    bf16 (autocast) and fp16 (autocast + GradScaler), channels-last on CUDA."""
    device = torch.device(ctx.device)
    repeats = 1 if ctx.quick else 20
    geometry = training_geometry(ctx.quick)
    builders = {
        "CTL": lambda: training_bench.ctl_workload(device, **geometry["CTL"], channels_last=ctx.cuda),
        "Symm": lambda: training_bench.symm_workload(device, **geometry["Symm"], channels_last=ctx.cuda),
    }
    result.notes.append(
        f"median of {repeats} synchronised steps after a warm-up step; channels-last: {ctx.cuda}; the bare CTL "
        "step is forward + a trivial loss on the feature + backward + Adam; the Symm step's bare column is the "
        "same step with the plain batch-hard triplet loss; fp16 steps use a GradScaler (skipped steps counted)"
    )
    for kind, build in builders.items():
        try:
            workload = build()
        except Exception as exc:
            result.rows.append({"workload": kind, "status": f"error: {first_line(exc)}"})
            continue
        for precision in training_bench.PRECISIONS:
            row: dict = {"workload": workload.name, "precision": precision}
            result.rows.append(row)
            if precision == "fp16" and not ctx.cuda:
                row["status"] = "skipped: fp16 autocast is a CUDA path (reference-speed kernels on the CPU)"
                continue
            if ctx.time_left() < 10:
                row["status"] = "skipped: out of time"
                continue
            try:
                times = _adaptive_times(workload, precision, repeats, ctx, rows_so_far=len(result.rows))
            except Exception as exc:
                row["status"] = f"error: {first_line(exc)}"
                ctx.log(f"training_steps: {workload.name} {precision}: {row['status']}")
                continue
            ratio = times["recipe_s"] / times["bare_s"]
            row.update(
                bare_ms=round(times["bare_s"] * 1e3, 2),
                recipe_ms=round(times["recipe_s"] * 1e3, 2),
                bare_images_per_s=round(workload.batch / times["bare_s"], 1),
                recipe_images_per_s=round(workload.batch / times["recipe_s"], 1),
                recipe_over_bare=round(ratio, 3),
                fp16_skipped_steps=times["skipped_steps"] if precision == "fp16" else "",
                repeats=times["repeats"],
            )
            if kind == "CTL":
                ctx.shared[f"ctl_bare_images_per_s/{precision}"] = workload.batch / times["bare_s"]
                limit = 1.05 if precision == "bf16" else 1.10
                row["target"], row["met"] = ctx.gpu_target([("CTL/bare", ratio, "<=", limit)])
            else:
                row["target"], row["met"] = "paper: negligible", "reported"
            ctx.log(
                f"training_steps: {workload.name} {precision}: bare {row['bare_ms']} ms, recipe {row['recipe_ms']} "
                f"ms, ratio {ratio:.3f}"
            )
        del workload
        if ctx.cuda:
            torch.cuda.empty_cache()


# Dataset sizes: Market-1501 (protocols.md 5), MSMT17, Stanford Online Products (test half).
MARKET = {"queries": 3368, "gallery": 15913, "ids": 751, "distractors": 2793}
MSMT17 = {"queries": 11659, "gallery": 82161, "ids": 3060, "distractors": 0}
SOP = {"images": 60502, "classes": 11316}


def _timed(fn: Callable, ctx: Context, repeats: int) -> tuple[object, float, float | None]:
    """(result, best seconds of ``repeats`` synchronised calls, peak device MiB above the start or None)."""
    best, out, peak = float("inf"), None, None
    for i in range(repeats):
        if i and best > ctx.time_left() / 4:  # a slow machine: one run, not an overrun budget
            break
        if ctx.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        start = time.perf_counter()
        out = fn()
        _sync(ctx)
        best = min(best, time.perf_counter() - start)
        if ctx.cuda:
            peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    return out, best, peak


def _reid_data(spec: dict, scale: float, seed: int, device: str) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    nq, ng = max(int(spec["queries"] * scale), 8), max(int(spec["gallery"] * scale), 32)
    n_ids = max(int(spec["ids"] * scale), 4)
    sets = reid_sets(nq, ng, 2048, n_ids, int(spec["distractors"] * scale), gen)
    return tuple(t.to(device) for t in sets)


def evaluation(ctx: Context, result: SectionResult) -> None:
    """The re-id protocols at Market-1501 and MSMT17 size (2048-d) and the SOP metrics at SOP size (512-d), on
    random clustered embeddings on the device."""
    from centrum.evaluation import dml_metrics, k_reciprocal_distances, reid_centroid_metrics, reid_metrics

    scale = 0.02 if ctx.quick else 1.0
    repeats = 1 if ctx.quick else 2
    result.notes.append(
        f"synthetic clustered embeddings on {ctx.device} (scale {scale:g} of the real sizes); seconds: best of "
        f"{repeats} synchronised calls after a small warm-up; peak MiB: device memory above the inputs (CUDA). "
        "SOP: Recall@1/10/100/1000 and MAP@R (NMI/F1 need a k-means on the CPU: not timed here)"
    )

    def reid_protocols(q, g, ql, gl, qc, gc, rerank: bool) -> list[tuple[str, Callable]]:
        out = [
            ("standard", lambda: reid_metrics(q, g, ql, gl, qc, gc, metric="euclidean")),
            ("centroid", lambda: reid_centroid_metrics(q, g, ql, gl, qc, gc, distractor_labels=(0,))),
        ]
        if rerank:
            out.append(
                (
                    "k-reciprocal re-ranked (k1 20, k2 6)",
                    lambda: reid_metrics(
                        query_labels=ql,
                        gallery_labels=gl,
                        query_cameras=qc,
                        gallery_cameras=gc,
                        distances=k_reciprocal_distances(q, g, metric="euclidean"),
                    ),
                )
            )
        return out

    warm = _reid_data(MARKET, 0.01, 9, ctx.device)
    reid_metrics(*warm, metric="euclidean")  # device start-up (kernels, cuBLAS) outside the timings
    datasets = [("Market-1501", MARKET, 0, True), ("MSMT17", MSMT17, 4, False)]
    for label, spec, seed, rerank in datasets:
        if ctx.time_left() < 15:
            result.rows.append({"dataset": label, "status": "skipped: out of time"})
            continue
        data = _reid_data(spec, scale, seed, ctx.device)
        sizes = f"{data[0].shape[0]:,} x {data[1].shape[0]:,}"
        for protocol, fn in reid_protocols(*data, rerank=rerank):
            row: dict = {"dataset": label, "protocol": protocol, "size": sizes, "dim": 2048}
            result.rows.append(row)
            _run_protocol(row, fn, ctx, repeats, ("mAP", "Rank-1"))
        del data
    if ctx.time_left() < 15:
        result.rows.append({"dataset": "SOP", "status": "skipped: out of time"})
        return
    gen = torch.Generator().manual_seed(1)
    n_classes = max(int(SOP["classes"] * scale), 10)
    total = max(int(SOP["images"] * scale), 5 * n_classes)
    counts = torch.full((n_classes,), total // n_classes)
    counts[: total - int(counts.sum())] += 1
    x, labels = clustered(n_classes, counts, 512, 2.5, gen)
    x, labels = x.to(ctx.device), labels.to(ctx.device)
    row = {"dataset": "SOP", "protocol": "Recall@K + MAP@R", "size": f"{x.shape[0]:,} (self-retrieval)", "dim": 512}
    result.rows.append(row)
    ks = (1, 10, 100, 1000)
    _run_protocol(
        row, lambda: dml_metrics(x, labels, recall_ks=ks, clustering=False), ctx, repeats, ("Recall@1", "MAP@R")
    )


def _run_protocol(row: dict, fn: Callable, ctx: Context, repeats: int, shown: tuple[str, str]) -> None:
    if ctx.time_left() < 5:
        row["status"] = "skipped: out of time"
        return
    try:
        metrics, seconds, peak = _timed(fn, ctx, repeats)
    except Exception as exc:
        row["status"] = f"error: {first_line(exc)}"
        ctx.log(f"evaluation: {row['dataset']} {row['protocol']}: {row['status']}")
        return
    row["seconds"] = round(seconds, 4)
    row["peak_device_mib"] = round(peak, 1) if peak is not None else "n/a (cpu)"
    for name in shown:
        row[name] = round(float(metrics[name]), 4)  # type: ignore[index]
    ctx.log(f"evaluation: {row['dataset']} {row['protocol']} ({row['size']}): {seconds:.3f} s")
