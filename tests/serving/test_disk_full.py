"""A full disk during a write, on a small tmpfs the test mounts (root only; skipped with the reason otherwise):
the service answers 507 with a JSON error and no traceback, keeps serving searches, accepts writes again once
there is space, and loses nothing acknowledged; the journal never keeps half a record."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from live_server import png_bytes, start_server

from centrum.serving.store import JOURNAL_FILE, IndexStore, StorageError


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted at ``tmp_path/disk``, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the full-disk cases run as root in CI")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); needs CAP_SYS_ADMIN")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte; return the filler file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (65536, 4096, 512, 64, 1):
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * size)
    return filler


@pytest.mark.slow  # restarts a real server
def test_full_disk_answers_507_keeps_searching_and_loses_nothing(small_disk, model_files, drawings):
    images, _ = drawings
    index = small_disk / "idx"
    model = ["--onnx", str(model_files["onnx"])]
    extra = ["--api-key-file", str(model_files["keys"])]
    log = small_disk.parent / "server.log"  # off the full disk, so the log itself can be read
    server = start_server(index, model, extra, log=log)
    try:
        with server.client(headers=server.auth()) as client:
            first = client.post("/classes/a/images", files=[("image", ("a.png", png_bytes(images[0]), "image/png"))])
            assert first.status_code == 201
            filler = fill(small_disk)
            full = client.post("/classes/b/images", files=[("image", ("b.png", png_bytes(images[4]), "image/png"))])
            assert full.status_code == 507, full.text
            assert full.headers["content-type"] == "application/json" and "disk is full" in full.json()["detail"]
            query = [("image", ("q.png", png_bytes(images[0]), "image/png"))]
            hit = client.post("/search", files=query)
            assert hit.status_code == 200 and hit.json()["results"][0]["hits"][0]["id"] == first.json()["ids"][0]
            filler.unlink()  # space is back: writes are accepted again
            again = client.post("/classes/b/images", files=[("image", ("b.png", png_bytes(images[4]), "image/png"))])
            assert again.status_code == 201, again.text
        server.stop(signal.SIGKILL)
        text = log.read_text()
        assert "Traceback" not in text and "disk is full" in text
        assert (index / JOURNAL_FILE).read_bytes().endswith(b"\n")
        server = start_server(index, model, extra, log=log)
        with server.client() as client:
            counts = {c["name"]: c["count"] for c in client.get("/classes").json()["classes"]}
            assert counts == {"a": 1, "b": 1}
            assert client.get(f"/images/{again.json()['ids'][0]}").status_code == 200
    finally:
        server.stop()


def test_a_failed_journal_append_leaves_no_partial_record(small_disk):
    """Enrolments without stored images until the journal itself hits the full disk (often mid-line): the
    failure is a StorageError, the journal is cut back to whole records, and every acknowledged id reloads."""
    rng = np.random.default_rng(0)
    store = IndexStore(small_disk / "idx", dim=64)
    store.enrol("warm-up", rng.normal(size=(1, 64)))  # the id high-water mark file is written now, not later
    fill(small_disk)
    acked, failure = [], None
    for i in range(2000):
        try:
            acked += store.enrol(f"c{i % 3}", rng.normal(size=(1, 64)), paths=[f"p{i}"])
        except StorageError as exc:
            failure = exc
            break
    assert failure is not None and failure.full, "the journal never filled the disk"
    journal = (small_disk / "idx" / JOURNAL_FILE).read_bytes()
    assert journal.endswith(b"\n")
    store._journal.close()  # as after kill -9
    (small_disk / "filler").unlink()
    reopened = IndexStore(small_disk / "idx", dim=64)
    assert reopened.num_images == len(acked) + 1
    assert all(str(reopened.image_path(i)) == f"p{n}" for n, i in enumerate(acked))
