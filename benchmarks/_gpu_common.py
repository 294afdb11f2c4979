"""Shared parts of ``benchmarks/gpu.py``: the run context (device, time budget, progress lines), a section's
result, target checks, and running a child process under a deadline. Importing this module runs nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


class SectionSkipped(Exception):  # noqa: N818 (a verdict, not an error)
    """Raised by a section that cannot run here (no CUDA, a missing package): recorded as ``skipped: <reason>``."""


def first_line(exc: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (or of a string), cut to ``limit`` characters."""
    text = str(exc)
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if isinstance(exc, BaseException):
        line = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclass
class SectionResult:
    """What one section reports: table rows (dicts, one column per key), free-text notes, and its status
    (``ok``, ``skipped: <reason>`` or ``error: <message>``) and wall-clock seconds, set by the runner."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    status: str = "not run"
    seconds: float = 0.0
    columns: list[str] = field(default_factory=list)  # the table's column order (other keys follow)

    def to_dict(self) -> dict[str, Any]:
        """The section as plain JSON data."""
        columns = list(dict.fromkeys([*self.columns, *(key for row in self.rows for key in row)]))
        return {
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "columns": columns,
            "rows": self.rows,
            "notes": self.notes,
        }


@dataclass
class Context:
    """Everything a section needs: the device, quick mode, where to write, the time left, progress output,
    and ``shared`` figures one section hands to a later one (the bare backbone's images per second)."""

    device: str
    quick: bool
    out: Path
    work: Path
    deadline: float
    compile_mode: str = "default"
    shared: dict[str, Any] = field(default_factory=dict)
    section_deadline: float = float("inf")
    started: float = field(default_factory=time.perf_counter)

    @property
    def cuda(self) -> bool:
        """True when the check runs on a CUDA device."""
        return self.device == "cuda"

    def time_left(self) -> float:
        """Seconds left to the current section: its own cap or the whole run's budget, whichever ends first."""
        return min(self.deadline, self.section_deadline) - time.perf_counter()

    def log(self, message: str) -> None:
        """One progress line, prefixed with the seconds since the start, flushed at once."""
        print(f"[{time.perf_counter() - self.started:7.1f} s] {message}", flush=True)

    def gpu_target(self, checks: list[tuple[str, float | None, str, float]]) -> tuple[str, str]:
        """(target, verdict) of GPU targets: each check is (label, value, "<=" or ">=", limit). On the CPU the
        verdict is ``n/a on cpu``, with ``--quick`` ``n/a (--quick sizes)``; a missing value (``None``) is a miss."""
        target = "; ".join(f"{label} {op} {limit:g}" for label, _, op, limit in checks)
        if not self.cuda:
            return target, "n/a on cpu (GPU target)"
        if self.quick:
            return target, "n/a (--quick sizes)"
        return target, verdict(checks)


def verdict(checks: list[tuple[str, float | None, str, float]]) -> str:
    """``met``, or ``missed: ...`` naming each check that failed with its figure."""
    missed = []
    for label, value, op, limit in checks:
        if value is None:
            missed.append(f"{label}: no figure")
        elif (op == "<=" and value > limit) or (op == ">=" and value < limit):
            missed.append(f"{label} {value:.3g}")
    return "met" if not missed else "missed: " + ", ".join(missed)


def child_env(*extra_paths: Path) -> dict[str, str]:
    """The environment of a child Python process: ``src`` (and ``extra_paths``) put in front of the caller's
    ``PYTHONPATH``, which is kept (packages carried onto the path must stay importable)."""
    paths = [str(p) for p in (ROOT / "src", *extra_paths)]
    existing = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, *([existing] if existing else [])])}


def run_process(
    args: list[str],
    timeout: float,
    env: dict[str, str] | None = None,
    echo: Callable[[str], bool] = lambda line: False,
    log: Callable[[str], None] | None = None,
) -> tuple[int | None, list[str], float]:
    """Run ``args`` in the repository root, stdout and stderr merged, for at most ``timeout`` seconds.

    Returns (exit code, or ``None`` when it ran out of time and was killed with its whole process group;
    the output lines; wall seconds). Lines for which ``echo`` is true are passed to ``log`` as they come.
    """
    start = time.perf_counter()
    process = subprocess.Popen(
        args,
        cwd=ROOT,
        env=env or child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,  # its own process group: a timeout also ends its data-loader workers
    )
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            if log is not None and echo(line):
                log("  | " + line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code: int | None = process.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        code = None
    reader.join(timeout=10)
    return code, lines, time.perf_counter() - start
