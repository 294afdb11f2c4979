"""The sections of ``benchmarks/gpu.py`` that run child processes: the project's CUDA tests (pytest),
``centrum train`` of the Market-1501 CTL config on a generated Market-layout dataset, and ``centrum serve``
under 1 and 16 concurrent clients. Importing this module runs nothing.
"""

from __future__ import annotations

import importlib.util
import math
import re
import statistics
import struct
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from _gpu_common import BENCHMARKS, ROOT, Context, SectionResult, SectionSkipped, child_env, first_line, run_process


def cuda_test_files() -> list[Path]:
    """The test files that mention CUDA: where the tests that skip without a GPU live."""
    return [p for p in sorted((ROOT / "tests").rglob("test_*.py")) if re.search("cuda", p.read_text(), re.I)]


def junit_counts(path: Path) -> dict:
    """Passed, failed, errors and skipped counts, and the failures' ids with their first message line, of a
    pytest ``--junitxml`` report."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        key = {"failure": "failed", "error": "errors", "skipped": "skipped"}.get(getattr(outcome, "tag", ""), "passed")
        counts[key] += 1
        if key in ("failed", "errors"):
            message = first_line(outcome.get("message") or outcome.text or "")  # type: ignore[union-attr]
            failures.append(f"{case.get('classname')}::{case.get('name')}: {message}")
    return {**counts, "failures": failures}


def cuda_tests(ctx: Context, result: SectionResult) -> None:
    """Run the project's CUDA tests (selected by :mod:`_gpu_pytest_cuda`) and count the outcomes."""
    if not ctx.cuda:
        raise SectionSkipped("needs CUDA (the CUDA tests skip on the CPU)")
    files = cuda_test_files()
    report = ctx.work / "cuda-tests.xml"
    args = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rfE",
        "-p",
        "_gpu_pytest_cuda",
        "--continue-on-collection-errors",
        f"--junitxml={report}",
        *(str(f.relative_to(ROOT)) for f in files),
    ]
    ctx.log(f"cuda_tests: {len(files)} test files mention CUDA; running the tests that need it")
    code, lines, seconds = run_process(
        args,
        ctx.time_left(),
        child_env(BENCHMARKS),
        log=ctx.log,
        echo=lambda line: bool(re.search(r"passed|failed|error", line)),
    )
    row: dict = {"files": len(files), "seconds": round(seconds, 1), "exit_code": "timeout" if code is None else code}
    result.rows.append(row)
    if not report.is_file():
        row["status"] = "error: no report: " + " / ".join(lines[-3:])
        return
    counts = junit_counts(report)
    failures = counts.pop("failures")
    row.update(counts)
    row["met"] = "met" if code == 0 and counts["passed"] > 0 else "missed"
    result.notes += [f"failed: {f}" for f in failures]
    summary = next((line for line in reversed(lines) if re.search(r"passed|failed|error|skipped", line)), "")
    result.notes.append(f"pytest: {summary.strip('= ')}")


def epoch_seconds(lines: list[str]) -> tuple[list[float], int]:
    """Seconds of each epoch from ``centrum train --progress plain``'s lines, and the number of epochs."""
    times = []
    total = 0
    for line in lines:
        match = re.match(r"epoch (\d+)/(\d+)\s.*?([\d.]+) s\s*$", line)
        if match:
            times.append(float(match.group(3)))
            total = int(match.group(2))
    return times, total


def _global_step(run: Path) -> int:
    import torch

    checkpoint = torch.load(run / "model.ckpt", map_location="cpu", mmap=True, weights_only=False)
    return int(checkpoint["global_step"])


def train_cli(ctx: Context, result: SectionResult) -> None:
    """Generate a Market-1501-layout dataset and run ``centrum train configs/market1501_ctl.yaml`` on it for a
    few hundred steps; its training images per second against the bare backbone's at the same batch and
    precision."""
    from _gpu_compute import bare_images_per_second, training_geometry

    market = ctx.work / "market1501"
    small = {"train-ids": 8, "train-images": 32, "query-ids": 4, "gallery-per-id": 3, "distractors": 4, "junk": 2}
    sizes = [part for key, value in small.items() for part in (f"--{key}", str(value))] if ctx.quick else []
    make = f"import sys; sys.path.insert(0, {str(BENCHMARKS)!r}); from _gpu_market import main; main(sys.argv[1:])"
    code, lines, seconds = run_process([sys.executable, "-c", make, "--root", str(market), *sizes], ctx.time_left())
    if code != 0:
        raise RuntimeError("dataset generation failed: " + " / ".join(lines[-3:]))
    written = lines[-1] if lines else ""
    ctx.log(f"train_cli: generated {market} in {seconds:.1f} s ({written})")
    result.notes.append(f"dataset: Market-1501 layout, 128x256 JPEGs, {written}; generated in {seconds:.1f} s")

    geometry = training_geometry(ctx.quick)["CTL"]
    precision, lightning_precision = ("bf16", "bf16-mixed") if ctx.cuda else ("fp32", "32-true")
    epochs = 3 if ctx.quick else 4
    run = ctx.work / "train-run"
    overrides = [
        f"data.root={market}",
        "model.pretrained=null",  # no network: random initialisation
        f"data.p={geometry['p']}",
        f"data.m={geometry['m']}",
        f"data.image_size=[{geometry['size'][0]}, {geometry['size'][1]}]",
        f"trainer.max_epochs={epochs}",
        "trainer.eval_every=0",  # evaluate once, after the last epoch
        "trainer.checkpoint_every_n_steps=0",  # checkpoints at epoch ends only
        f"trainer.precision={lightning_precision}",
    ]
    if ctx.quick:
        overrides += [f"model.backbone={geometry['backbone']}", "trainer.limit_train_batches=2",
                      "data.num_workers=0", "data.test_batch_size=8"]  # fmt: skip
    device = "cuda" if ctx.cuda else "cpu"
    args = [sys.executable, "-m", "centrum", "train", "configs/market1501_ctl.yaml", *overrides,
            "--device", device, "--out", str(run), "--progress", "plain"]  # fmt: skip
    ctx.log("train_cli: centrum train " + " ".join(args[5:]))
    shown = ("epoch", "  evaluation", "centrum")
    code, lines, seconds = run_process(args, ctx.time_left() - 5, log=ctx.log, echo=lambda line: line.startswith(shown))
    if code != 0:
        tail = " / ".join(line for line in lines[-4:] if line.strip())
        raise RuntimeError(f"centrum train {'timed out' if code is None else f'exited with {code}'}: {tail}")
    epoch_times, total_epochs = epoch_seconds(lines)
    steps = _global_step(run)
    per_epoch = steps // max(total_epochs, 1)
    batch = geometry["p"] * geometry["m"]
    # the first epoch carries start-up (worker start, cudnn and allocator warm-up), the last the final evaluation
    steady = epoch_times[1:-1] or epoch_times[:1]
    # an epoch line prints tenths of a second: a tiny (--quick) epoch can read 0.0 s
    per_epoch_rate = per_epoch * batch / max(statistics.median(steady), 0.05)
    in_epoch_rate = steady_rate(tensorboard_step_times(run), per_epoch, total_epochs, batch)
    images_per_s = in_epoch_rate or per_epoch_rate
    bare = bare_images_per_second(ctx, precision)
    ratio = images_per_s / bare
    row: dict = {
        "config": "configs/market1501_ctl.yaml",
        "precision": lightning_precision,
        "batch": f"{geometry['p']}x{geometry['m']} at {geometry['size'][0]}x{geometry['size'][1]}",
        "steps": steps,
        "steps_per_epoch": per_epoch,
        "epoch_s": " / ".join(f"{t:.1f}" for t in epoch_times),
        "in_epoch_images_per_s": round(in_epoch_rate, 1) if in_epoch_rate else "n/a (no TensorBoard log points)",
        "whole_epoch_images_per_s": round(per_epoch_rate, 1),
        "bare_images_per_s": round(bare, 1),
        "train_over_bare": round(ratio, 3),
        "wall_s": round(seconds, 1),
    }
    row["target"], row["met"] = ctx.gpu_target([("train/bare", ratio, ">=", 0.9)])
    result.rows.append(row)
    result.notes.append(
        "in-epoch images/s: steps x batch / seconds between the first and the last TensorBoard log point inside "
        "each middle epoch (median; no start-up, epoch-end checkpoint or evaluation in it); whole-epoch images/s: "
        "steps per epoch x batch / the median time of the middle epochs from `--progress plain`'s lines (with "
        "the epoch-end work); train/bare uses the in-epoch figure when there is one. Bare: the bare step of the "
        "training_steps section at the same batch and precision"
        f"{' (channels-last)' if ctx.cuda else ''}. Overrides: " + " ".join(overrides)
    )
    ctx.log(f"train_cli: {images_per_s:.0f} images/s vs bare {bare:.0f} images/s ({ratio:.2f})")


def tensorboard_step_times(folder: Path) -> dict[int, float]:
    """The earliest wall-clock time of each step that has a summary in the TensorBoard event files under
    ``folder``. Read from the TFRecord framing and the ``Event`` message's fields (1 wall_time, 2 step,
    5 summary) directly, so that no TensorBoard import is needed."""
    times: dict[int, float] = {}
    for path in folder.rglob("events.out.tfevents.*"):
        data, pos = path.read_bytes(), 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack_from("<Q", data, pos)
            record = data[pos + 12 : pos + 12 + length]  # after the length and its CRC
            pos += 12 + length + 4  # and the data's CRC
            fields = _protobuf_fields(record)
            if 5 in fields and isinstance(fields.get(1), float):
                step = int(fields.get(2, 0))
                times[step] = min(times.get(step, math.inf), fields[1])
    return times


def _varint(buffer: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buffer[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _protobuf_fields(buffer: bytes) -> dict[int, float | int | bool]:
    """Top-level fields of a protobuf message: varints and doubles by value, others as ``True``."""
    fields: dict[int, float | int | bool] = {}
    pos = 0
    try:
        while pos < len(buffer):
            key, pos = _varint(buffer, pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                fields[number], pos = _varint(buffer, pos)
            elif wire == 1:
                fields[number] = struct.unpack_from("<d", buffer, pos)[0]
                pos += 8
            elif wire == 2:
                size, pos = _varint(buffer, pos)
                fields[number], pos = True, pos + size
            elif wire == 5:
                fields[number], pos = True, pos + 4
            else:
                break
    except (IndexError, struct.error):
        pass  # a truncated record (a file being written): what was read stands
    return fields


def steady_rate(times: dict[int, float], per_epoch: int, epochs: int, batch: int) -> float | None:
    """Images per second inside the middle epochs (not the first, not the last) from logged (step, time)
    points: per epoch, the steps between its first and last point over their seconds; the median over epochs.
    None when no epoch has two points."""
    rates = []
    for epoch in range(1, epochs - 1):
        low, high = epoch * per_epoch, (epoch + 1) * per_epoch
        steps = sorted(s for s in times if low < s < high)
        if len(steps) >= 2 and times[steps[-1]] > times[steps[0]]:
            rates.append((steps[-1] - steps[0]) * batch / (times[steps[-1]] - times[steps[0]]))
    return statistics.median(rates) if rates else None


SERVER_MODULES = ("fastapi", "uvicorn", "multipart", "httpx")


def serve(ctx: Context, result: SectionResult) -> None:
    """``centrum serve`` on the device: images per second at 1 and 16 concurrent clients (benchmarks/serve.py)."""
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise SectionSkipped(f"not installed: {', '.join(missing)}")
    import httpx

    import serve as serve_bench  # benchmarks/serve.py: checkpoint, index, query image, server, clients

    if ctx.quick:
        # 16 client threads take about a second to start on a busy 2-core machine: 3 s phases, not 1 s
        backbone, size, dim, entries, seconds = "small_cnn", (32, 32), 64, 2000, 3.0
    else:
        backbone, size, dim, entries, seconds = "googlenet", (227, 227), 512, 100_000, 8.0
    threads = 1 if ctx.quick else 0  # 0: the server's default, every CPU
    work = ctx.work / "serve"
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = serve_bench.make_checkpoint(work / "model.ckpt", backbone, size, dim)
    serve_bench.build_index(work / "index", dim, entries)
    image = serve_bench.query_image()
    result.notes.append(
        f"model {backbone} {size[0]}x{size[1]}, {dim}-d, random weights, on {ctx.device}; index {entries:,} "
        f"entries; one 320x320 JPEG per request (POST /search, k 10); each phase {seconds:g} s after warm-up; "
        "clients are threads of this process"
    )
    model_args = ["--checkpoint", str(checkpoint), "--device", ctx.device]
    process, url = serve_bench.start_server(work / "index", model_args, threads)
    ctx.log(f"serve: server up at {url}")
    try:
        latencies = sorted(serve_bench.service_latencies(url, image, 5 if ctx.quick else 20))
        rates = {}
        for clients in (1, 16):
            before = httpx.get(url + "/health").json()["embedding"]
            rates[clients] = serve_bench.throughput(url, image, clients, seconds)
            after = httpx.get(url + "/health").json()["embedding"]
            per_call = (after["images"] - before["images"]) / max(1, after["calls"] - before["calls"])
            result.rows.append(
                {
                    "clients": clients,
                    "images_per_s": round(rates[clients], 1),
                    "images_per_model_call": round(per_call, 2),
                }
            )
            ctx.log(f"serve: {clients} clients: {rates[clients]:.1f} images/s, {per_call:.1f} images per model call")
    finally:
        process.terminate()
        process.wait(timeout=30)
    ratio = rates[16] / rates[1]
    target, met = ctx.gpu_target([("16 clients / 1 client", ratio, ">=", 4.0)])
    result.rows.append({"clients": "16 / 1", "images_per_s": round(ratio, 2), "target": target, "met": met})
    result.notes.append(f"p50 latency at 1 client: {latencies[len(latencies) // 2] * 1e3:.1f} ms")
