"""Starting a real ``centrum serve`` process on 127.0.0.1 (a free port) and talking to it over HTTP."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))

SRC = Path(__file__).resolve().parents[2] / "src"
API_KEY = "test-key-123"


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_bytes(image) -> bytes:
    """``image`` encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class Server:
    """A running ``centrum serve`` subprocess and how to reach it."""

    process: subprocess.Popen
    url: str
    args: list[str]
    log: Path

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(index: Path, model_args: list[str], extra: list[str] = (), log: Path | None = None) -> Server:
    """Start ``python -m centrum serve`` and wait (at most 90 s) until ``/health`` answers."""
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "centrum",
        "serve",
        "--index",
        str(index),
        *model_args,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--threads",
        "1",
        *extra,
    ]
    log = log or index.parent / f"server-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    with open(log, "wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return Server(process, url, args, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server did not answer within 90 s: {log.read_text()[-2000:]}")


def run_serve(
    index: Path, model_args: list[str], extra: list[str] = (), timeout: float = 90
) -> subprocess.CompletedProcess:
    """Run ``python -m centrum serve`` expecting it to stop by itself (a refused start); its output as text."""
    args = [sys.executable, "-m", "centrum", "serve", "--index", str(index), *model_args, "--host", "127.0.0.1"]
    if "--port" not in extra:
        args += ["--port", str(free_port())]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [*args, "--threads", "1", *extra], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
