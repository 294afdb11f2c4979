"""The service's files under damage, against a real ``centrum serve`` killed with SIGKILL: a damaged journal record
stops the start (file and line named) until ``--recover``, which keeps every intact record and never reuses an
acknowledged id; a torn last line is still dropped; a damaged snapshot is named, or rebuilt from a complete
journal; journals written before records carried checksums still load."""

from __future__ import annotations

import base64
import json
import signal

import numpy as np
import pytest
from live_server import png_bytes, run_serve, start_server

from centrum.serving.journal import decode_line, encode_record
from centrum.serving.store import JOURNAL_FILE, SNAPSHOT_FILE, IndexStore, JournalDamagedError


def _setup(model_files):
    return ["--onnx", str(model_files["onnx"])], ["--api-key-file", str(model_files["keys"])]


def _enrol(client, name: str, image) -> list[int]:
    r = client.post(f"/classes/{name}/images", files=[("image", ("x.png", png_bytes(image), "image/png"))])
    assert r.status_code == 201, r.text
    return r.json()["ids"]


def _classes(client) -> dict[str, int]:
    return {c["name"]: c["count"] for c in client.get("/classes").json()["classes"]}


def _damage_line(journal, number: int) -> None:
    """Change a few bytes in the middle of line ``number`` (1-based), keeping its length and newline."""
    lines = journal.read_bytes().split(b"\n")
    line = bytearray(lines[number - 1])
    middle = len(line) // 2
    line[middle : middle + 3] = b"QQQ" if bytes(line[middle : middle + 3]) != b"QQQ" else b"ZZZ"
    lines[number - 1] = bytes(line)
    journal.write_bytes(b"\n".join(lines))


@pytest.mark.slow  # restarts a real server three or four times
def test_damaged_middle_record_refuses_then_recovers_without_reusing_ids(tmp_path, model_files, drawings):
    images, _ = drawings
    index = tmp_path / "idx"
    model, extra = _setup(model_files)
    server = start_server(index, model, extra)
    try:
        with server.client(headers=server.auth()) as client:
            acked = [_enrol(client, name, images[i])[0] for i, name in enumerate(("a", "b", "c"))]
        server.stop(signal.SIGKILL)
        journal = index / JOURNAL_FILE
        _damage_line(journal, 2)
        damaged = journal.read_bytes()

        refused = run_serve(index, model, extra)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        message = refused.stderr.strip()
        assert len(message.splitlines()) == 1 and "Traceback" not in refused.stderr
        assert str(journal) in message and "line 2" in message and "--recover" in message
        assert "centrum serve: http" not in refused.stdout  # no banner: it never served
        assert journal.read_bytes() == damaged  # nothing repaired behind the operator's back

        server = start_server(index, model, [*extra, "--recover"])
        with server.client(headers=server.auth()) as client:
            assert _classes(client) == {"a": 1, "c": 1}  # the intact record after the damaged one is kept
            assert client.get(f"/images/{acked[2]}").status_code == 200
            new = _enrol(client, "d", images[3])[0]
        assert new not in acked and new > max(acked)  # an acknowledged id is never handed out again
        aside = list(index.glob(f"{JOURNAL_FILE}.damaged-*"))
        assert len(aside) == 1 and damaged.split(b"\n")[1] in aside[0].read_bytes()
        server.stop(signal.SIGKILL)

        # a torn last line (a crash mid-append, never acknowledged) is still dropped and the journal repaired
        with open(journal, "ab") as handle:
            handle.write(encode_record({"seq": 99, "op": "delete_class", "class": "a"})[:20])
        server = start_server(index, model, extra)  # no --recover needed
        with server.client() as client:
            assert _classes(client) == {"a": 1, "c": 1, "d": 1}
            assert client.get(f"/images/{new}").status_code == 200
        assert journal.read_bytes().endswith(b"\n") or journal.stat().st_size == 0
    finally:
        server.stop()


@pytest.mark.slow  # restarts a real server three or four times
def test_damaged_last_complete_record_is_not_taken_for_a_torn_append(tmp_path, model_files, drawings):
    """A complete line (newline written) was fsynced and may have been acknowledged: refuse, then recover with
    ids continuing past it."""
    images, _ = drawings
    index = tmp_path / "idx"
    model, extra = _setup(model_files)
    server = start_server(index, model, extra)
    try:
        with server.client(headers=server.auth()) as client:
            acked = [_enrol(client, name, images[i])[0] for i, name in enumerate(("a", "b"))]
        server.stop(signal.SIGKILL)
        _damage_line(index / JOURNAL_FILE, 2)
        refused = run_serve(index, model, extra)
        assert refused.returncode == 2 and "line 2" in refused.stderr and "last complete record" in refused.stderr
        server = start_server(index, model, [*extra, "--recover"])
        with server.client(headers=server.auth()) as client:
            assert _classes(client) == {"a": 1}
            assert _enrol(client, "b", images[1])[0] > max(acked)
    finally:
        server.stop()


@pytest.mark.slow  # restarts a real server three or four times
def test_damaged_snapshot_is_named_or_rebuilt_from_a_complete_journal(tmp_path, model_files, drawings):
    images, _ = drawings
    index = tmp_path / "idx"
    model, extra = _setup(model_files)
    server = start_server(index, model, extra)
    try:
        with server.client(headers=server.auth()) as client:
            _enrol(client, "a", images[0])
            _enrol(client, "b", images[1])
        server.stop(signal.SIGKILL)
        # an empty snapshot beside a journal that holds every write since the start: rebuilt from the journal
        (index / SNAPSHOT_FILE).write_bytes(b"")
        server = start_server(index, model, extra)
        with server.client() as client:
            assert _classes(client) == {"a": 1, "b": 1}
        assert "rebuilt from the journal" in server.log.read_text()
        assert list(index.glob(f"{SNAPSHOT_FILE}.damaged-*"))
        server.stop()  # SIGTERM: compaction writes a good snapshot and empties the journal
        assert (index / JOURNAL_FILE).stat().st_size == 0

        # truncated after a compaction: the journal no longer holds the snapshot's writes, so refuse, naming it
        snapshot = index / SNAPSHOT_FILE
        snapshot.write_bytes(snapshot.read_bytes()[: snapshot.stat().st_size // 2])
        refused = run_serve(index, model, extra)
        assert refused.returncode == 2, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert str(snapshot) in refused.stderr and "damaged" in refused.stderr
        assert "BadZipFile" not in refused.stderr and "Traceback" not in refused.stderr
    finally:
        server.stop()


def test_old_journal_without_checksums_still_loads(tmp_path):
    """Records as the service wrote them before checksums (bare JSON lines) replay, and new records append."""
    vectors = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    legacy = [
        {"seq": 1, "op": "enrol", "class": "a", "ids": [0, 1], "paths": ["p0", "p1"],
         "vectors": base64.b64encode(vectors[:2].tobytes()).decode()},
        {"seq": 2, "op": "enrol", "class": "b", "ids": [2], "paths": ["p2"],
         "vectors": base64.b64encode(vectors[2:].tobytes()).decode()},
        {"seq": 3, "op": "delete_image", "id": 0},
    ]  # fmt: skip
    (tmp_path / JOURNAL_FILE).write_text("".join(json.dumps(r) + "\n" for r in legacy))
    store = IndexStore(tmp_path, dim=8)
    assert store.classes() == {"a": 1, "b": 1}
    assert store.enrol("c", vectors[:1]) == [3]
    lines = (tmp_path / JOURNAL_FILE).read_bytes().splitlines()
    assert lines[-1][:1] != b"{" and decode_line(lines[-1], 8)["class"] == "c"  # new records carry a checksum
    store.close()
    assert IndexStore(tmp_path, dim=8).classes() == {"a": 1, "b": 1, "c": 1}


def test_store_refuses_a_damaged_record_and_recovers_every_intact_one(tmp_path):
    """The same rules at the store level (fast): refuse naming file and line, recover, ids past every id used."""
    rng = np.random.default_rng(1)
    store = IndexStore(tmp_path, dim=8)
    acked = [store.enrol(name, rng.normal(size=(2, 8)))[-1] for name in ("a", "b", "c")]
    store._journal.close()  # as after kill -9: no compaction
    journal = tmp_path / JOURNAL_FILE
    _damage_line(journal, 2)
    with pytest.raises(JournalDamagedError, match=r"journal .*journal.log line 2 is damaged \(checksum mismatch\)"):
        IndexStore(tmp_path, dim=8)
    recovered = IndexStore(tmp_path, dim=8, recover=True)
    assert recovered.classes() == {"a": 2, "c": 2} and recovered.recovered
    assert recovered.enrol("d", rng.normal(size=(1, 8)))[0] > max(acked)
    recovered.close()
    assert IndexStore(tmp_path, dim=8).classes() == {"a": 2, "c": 2, "d": 1}
