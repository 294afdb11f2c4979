"""The GPU check in one go: every speed claim of issue 16 measured in one run, written as one JSON file and one
Markdown file of tables (one table per section), within a time budget (8 minutes by default).

    python benchmarks/gpu.py                                  # on the GPU: all sections, --out runs/gpu-check
    python benchmarks/gpu.py --device cpu --quick --out /tmp/g   # tiny sizes on the CPU (CI): cannot rot
    python benchmarks/gpu.py --sections losses,training_steps --budget-s 300

Sections (``--sections``, comma-separated, in this order):
- cuda_tests: the project's tests that need CUDA (pytest in a child process): passed / failed / skipped;
- losses: the five pair losses at 64 x 2, D = 512, with and without Symm (per anchor, per pair), eager and
  ``torch.compile(loss, fullgraph=True)``: forward and forward+backward ms, Symm/base ratios;
- training_steps: the CTL step vs the bare ResNet-50 step (16 x 4, 256x128) and triplet+Symm vs triplet
  (GoogLeNet 64 x 2, 227x227) in fp32, bf16 and fp16 (GradScaler), channels-last on CUDA;
- evaluation: the re-id protocols at Market-1501 and MSMT17 size, Recall@K and MAP@R at SOP size;
- train_cli: ``centrum train configs/market1501_ctl.yaml`` on a generated dataset in Market-1501's exact layout
  and size, its images per second against the bare backbone's;
- serve: ``centrum serve`` throughput at 1 and 16 concurrent clients, the model on the device.
A section that cannot run here (no CUDA, a package missing) is recorded as ``skipped: <reason>``; one that fails
as ``error: <message>``, and the run goes on. When the budget is spent the remaining sections are recorded as
``skipped: out of time``. Nothing is installed or downloaded. Progress lines are printed as the run goes.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from _gpu_common import ROOT, Context, SectionResult, SectionSkipped, first_line

SECTION_NAMES = ("cuda_tests", "losses", "training_steps", "evaluation", "train_cli", "serve")
# the most seconds each section may take (the whole run's budget may cut it shorter)
SECTION_CAPS = {"cuda_tests": 150, "losses": 180, "training_steps": 90, "evaluation": 90, "train_cli": 180, "serve": 90}


def section_functions() -> dict[str, Callable[[Context, SectionResult], None]]:
    """Each section's function, imported here so that a section whose imports fail is skipped, not fatal."""
    functions: dict[str, Callable[[Context, SectionResult], None]] = {}
    for name in SECTION_NAMES:
        module = "_gpu_processes" if name in ("cuda_tests", "train_cli", "serve") else "_gpu_compute"
        try:
            functions[name] = getattr(__import__(module), name)
        except Exception as exc:  # an import error of one part must not stop the others
            functions[name] = _skipper(f"import failed: {first_line(exc)}")
    return functions


def _skipper(reason: str) -> Callable[[Context, SectionResult], None]:
    def skip(ctx: Context, result: SectionResult) -> None:
        raise SectionSkipped(reason)

    return skip


def _version(distribution: str) -> str:
    try:  # from the package metadata: importing Lightning only to read its version costs seconds
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(device: str) -> dict[str, Any]:
    """The machine and software the figures come from."""
    info: dict[str, Any] = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "lightning": _version("lightning"),
        "onnxruntime": _version("onnxruntime"),
    }
    try:
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["commit"] = "unknown"
    return info


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _header(key: str) -> str:
    """A column's title from its JSON key: ``symm_over_base_eager`` -> ``symm/base eager``."""
    return key.replace("fwd_bwd", "fwd+bwd").replace("_per_s", "/s").replace("_over_", "/").replace("_", " ")


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the environment, then per section its status and one table of its rows."""
    env = report["environment"]
    lines = [
        f"# GPU check: {env['device_name']} ({env['device']})",
        "",
        f"torch {env['torch']} (CUDA {env['cuda']}), Lightning {env['lightning']}, ONNX Runtime "
        f"{env['onnxruntime']}, Python {env['python']}, {env['cpus']} CPUs, commit {env['commit']}; "
        f"{'--quick, ' if report['quick'] else ''}budget {report['budget_s']:g} s, total {report['total_s']:.0f} s; "
        f"started {report['started']}",
    ]
    for name, section in report["sections"].items():
        lines += ["", f"## {name}", "", f"status: {section['status']} ({section['seconds']:.1f} s)"]
        rows = section["rows"]
        if rows:
            columns = [c for c in section["columns"] if any(c in row for row in rows)]
            lines += ["", "| " + " | ".join(_header(c) for c in columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
        if section["notes"]:
            lines += [""] + [f"- {note}" for note in section["notes"]]
    return "\n".join(lines) + "\n"


def write_outputs(report: dict[str, Any], out: Path) -> None:
    """``gpu.json`` and ``gpu.md`` in ``out``, each replaced whole (a killed run leaves the last complete pair)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("gpu.json", json.dumps(report, indent=2, default=str) + "\n"), ("gpu.md", markdown(report))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes everywhere (a CPU finishes in < 1 min)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check", help="folder of gpu.json, gpu.md")
    parser.add_argument("--sections", default=",".join(SECTION_NAMES), help="comma-separated, default: all")
    parser.add_argument("--budget-s", type=float, default=480.0, help="the whole run's time budget (default 480)")
    parser.add_argument(
        "--compile-mode",
        default="default",
        choices=("default", "reduce-overhead", "max-autotune"),
        help="torch.compile mode of the losses section (reduce-overhead: CUDA graphs)",
    )
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in sections if s not in SECTION_NAMES]
    if unknown:
        parser.error(f"--sections: unknown {', '.join(unknown)}; choose from {', '.join(SECTION_NAMES)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible (torch.cuda.is_available() is False); use --device cpu")
    if args.budget_s <= 0:
        parser.error(f"--budget-s must be > 0, got {args.budget_s:g}")
    args.sections = sections
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections in order within the budget; write gpu.json and gpu.md after each section."""
    args = parse_args(argv)
    started = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="centrum-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        device=args.device,
        quick=args.quick,
        out=args.out,
        work=work,
        deadline=started + args.budget_s,
        compile_mode=args.compile_mode,
        started=started,
    )
    report: dict[str, Any] = {
        "environment": environment(args.device),
        "quick": args.quick,
        "budget_s": args.budget_s,
        "compile_mode": args.compile_mode,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "total_s": 0.0,
        "sections": {},
    }
    where = f"{report['environment']['device_name']} ({args.device})"
    ctx.log(f"GPU check on {where}, sections: {', '.join(args.sections)}")
    functions = section_functions()
    try:
        for name in args.sections:
            result = SectionResult()
            begin = time.perf_counter()
            if ctx.deadline - begin < 5:
                result.status = "skipped: out of time"
            else:
                ctx.section_deadline = begin + SECTION_CAPS[name]
                ctx.log(f"{name}: start ({ctx.time_left():.0f} s available)")
                try:
                    functions[name](ctx, result)
                    result.status = "ok"
                except SectionSkipped as exc:
                    result.status = f"skipped: {exc}"
                except Exception as exc:  # recorded; the next section still runs
                    result.status = f"error: {first_line(exc)}"
                finally:
                    if ctx.cuda:
                        torch.cuda.empty_cache()
            result.seconds = time.perf_counter() - begin
            ctx.log(f"{name}: {result.status} ({result.seconds:.1f} s)")
            report["sections"][name] = result.to_dict()
            report["total_s"] = round(time.perf_counter() - started, 1)
            write_outputs(report, args.out)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    ctx.log(f"done in {report['total_s']:.0f} s: {args.out / 'gpu.json'}, {args.out / 'gpu.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
