"""Starting ``centrum serve``: a port in use and a held Qdrant folder are one line and exit 2 before any banner;
``--help`` shows the defaults of --host/--port; a folder written by ``centrum index build`` shows and enrols into
the class names it stores."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
from live_server import SRC, png_bytes, run_serve, start_server

from centrum.cli import main


def test_port_in_use_is_one_line_before_the_banner(tmp_path, model_files):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_serve(tmp_path / "idx", ["--onnx", str(model_files["onnx"])], ["--no-auth", "--port", str(port)])
    assert done.returncode == 2, done.stdout + done.stderr
    assert "centrum serve: http" not in done.stdout  # the banner never claimed a port it did not get
    assert done.stderr.strip().splitlines() == [
        f"centrum serve: error: port {port} on 127.0.0.1 is already in use: stop what listens there, or pass --port N"
    ]


@pytest.mark.slow  # imports qdrant in two processes
def test_a_qdrant_folder_held_by_another_process_is_one_line(tmp_path, model_files):
    pytest.importorskip("qdrant_client")
    folder = tmp_path / "qdrant"
    holder = subprocess.Popen(  # another process holds the local folder, as a running serve would
        [sys.executable, "-c", f"from qdrant_client import QdrantClient; c = QdrantClient(path={str(folder)!r}); "
         "print('held', flush=True); import time; time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(SRC)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        done = run_serve(
            tmp_path / "idx",
            ["--onnx", str(model_files["onnx"])],
            ["--no-auth", "--backend", "qdrant", "--qdrant-path", str(folder)],
        )
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert str(folder) in lines[0] and "one process at a time" in lines[0] and "--qdrant-url" in lines[0]


def test_serve_help_shows_host_and_port_defaults(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "address to listen on" in text and "(default: 127.0.0.1)" in text
    assert "TCP port to listen on (default: 8000)" in text and "--recover" in text


@pytest.mark.slow  # builds an index with the CLI, then starts a real server
def test_a_built_index_shows_its_class_names_and_enrols_into_them(tmp_path, model_files, drawings):
    images, _ = drawings
    rng = np.random.default_rng(0)
    npz = tmp_path / "gallery.npz"
    np.savez(
        npz,
        embeddings=rng.normal(size=(6, 128)).astype(np.float32),
        labels=np.array([0, 0, 1, 1, 2, 2]),
        class_names=np.array(["cat", "dog", "bird"]),
    )
    index = tmp_path / "idx"
    assert main(["index", "build", "--embeddings", str(npz), "--out", str(index)]) == 0
    server = start_server(index, ["--onnx", str(model_files["onnx"])], ["--no-auth"])
    try:
        with server.client() as client:
            assert client.get("/classes").json()["classes"] == [
                {"name": "bird", "count": 2},
                {"name": "cat", "count": 2},
                {"name": "dog", "count": 2},
            ]
            files = [("image", ("d.png", png_bytes(images[0]), "image/png"))]
            enrolled = client.post("/classes/dog/images", files=files)
            assert enrolled.status_code == 201 and enrolled.json()["count"] == 3  # into the existing class
            assert len(client.get("/classes").json()["classes"]) == 3
            hits = client.post("/search?k=7", files=files).json()["results"][0]["hits"]
            assert {h["class"] for h in hits} == {"cat", "dog", "bird"}
        server.stop(signal.SIGKILL)
        server = start_server(index, ["--onnx", str(model_files["onnx"])], ["--no-auth"])
        with server.client() as client:
            assert {c["name"]: c["count"] for c in client.get("/classes").json()["classes"]} == {
                "bird": 2,
                "cat": 2,
                "dog": 3,
            }
    finally:
        server.stop()
