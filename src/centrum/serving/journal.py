"""The service's write-ahead journal: one checksummed record per line, fsynced before a write is acknowledged.

A line is ``<crc32 as 8 hex digits> <JSON record>\\n``; the CRC-32 covers the JSON bytes exactly, so a changed byte
is detected rather than guessed at. Lines written before checksums existed (a bare JSON object) still load.

Reading tells two kinds of damage apart:

* a *torn tail*: bytes after the last newline, left by a crash in the middle of an append. That write was never
  acknowledged (a write is acknowledged only after its whole line is fsynced), so it is dropped;
* a *damaged record*: a complete line that fails its checksum or cannot be read. It may hold an acknowledged
  write, so the store refuses to start (naming the file and line) unless told to recover, which keeps every
  intact record and sets the damaged lines aside (:func:`set_aside`).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

JOURNAL_FILE = "journal.log"
OPERATIONS = ("enrol", "delete_image", "delete_class")


class JournalDamagedError(ValueError):
    """A complete journal line fails its checksum or cannot be read: the store will not guess past it."""

    def __init__(self, path: Path, line: int, reason: str, intact_after: int) -> None:
        self.path, self.line, self.reason, self.intact_after = path, line, reason, intact_after
        follows = f"{intact_after} intact record(s) follow it" if intact_after else "it is the last complete record"
        super().__init__(
            f"journal {path} line {line} is damaged ({reason}); {follows}. Refusing to start so that no "
            f"acknowledged write is dropped: restart with --recover to keep every intact record and move the "
            f"damaged line(s) to {path.name}.damaged-<time> (see docs/serving.md, 'Damage and recovery')"
        )


def encode_record(record: dict) -> bytes:
    """``record`` as one journal line: its CRC-32 (8 hex digits), a space, its JSON, a newline."""
    body = json.dumps(record, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode_line(line: bytes, dim: int) -> dict:
    """The record of one complete journal line (without its newline); ``ValueError`` saying what is wrong.

    A checksummed line must match its CRC-32; a legacy line (no checksum) must parse. Either way the record's
    fields are checked against the store's embedding dimension ``dim`` before anything is applied.
    """
    if line.startswith(b"{"):  # written before records carried a checksum
        body = line
    else:
        head, _, body = line.partition(b" ")
        try:
            expected = int(head, 16) if len(head) == 8 else None
        except ValueError:
            expected = None
        if expected is None:
            raise ValueError("no checksum at the start of the line")
        if zlib.crc32(body) != expected:
            raise ValueError("checksum mismatch")
    try:
        record = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    check_record(record, dim)
    return record


def check_record(record: object, dim: int) -> None:
    """``ValueError`` unless ``record`` is a well-formed journal record for ``dim``-d embeddings."""
    if not isinstance(record, dict) or not isinstance(record.get("seq"), int) or record.get("op") not in OPERATIONS:
        raise ValueError("not a journal record (needs an integer seq and a known op)")
    op = record["op"]
    if op == "enrol":
        ids, paths = record.get("ids"), record.get("paths")
        if not isinstance(record.get("class"), str) or not isinstance(ids, list) or not ids:
            raise ValueError("enrol record without a class name or ids")
        if not all(isinstance(i, int) and i >= 0 for i in ids) or not isinstance(paths, list) or len(paths) != len(ids):
            raise ValueError("enrol record with bad ids or paths")
        try:
            size = len(base64.b64decode(record.get("vectors", ""), validate=True))
        except (binascii.Error, TypeError, ValueError):
            raise ValueError("enrol record whose vectors are not base64") from None
        if size != 4 * dim * len(ids):
            raise ValueError(f"enrol record with {size} bytes of vectors for {len(ids)} {dim}-d embeddings")
    elif op == "delete_image" and not isinstance(record.get("id"), int):
        raise ValueError("delete_image record without an integer id")
    elif op == "delete_class" and not isinstance(record.get("class"), str):
        raise ValueError("delete_class record without a class name")


@dataclass
class JournalScan:
    """What a journal file holds: intact records (with line numbers), damaged lines and a torn tail."""

    path: Path
    records: list[tuple[int, dict]] = field(default_factory=list)
    damaged: list[tuple[int, bytes, str]] = field(default_factory=list)  # (line number, raw line, reason)
    torn_tail: bytes = b""

    def first_damage(self) -> JournalDamagedError | None:
        """The error naming the first damaged line, or ``None`` when every complete line is intact."""
        if not self.damaged:
            return None
        line, _, reason = self.damaged[0]
        return JournalDamagedError(self.path, line, reason, sum(1 for n, _ in self.records if n > line))

    @property
    def complete_from_start(self) -> bool:
        """Whether the journal holds every write ever made (its first record is write 1, no damage)."""
        return not self.damaged and bool(self.records) and self.records[0][1]["seq"] == 1


def scan_journal(path: Path, dim: int) -> JournalScan:
    """Read every line of the journal at ``path`` (missing: empty) and classify it."""
    scan = JournalScan(path)
    if not path.is_file():
        return scan
    *lines, scan.torn_tail = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            scan.records.append((number, decode_line(line, dim)))
        except ValueError as exc:
            scan.damaged.append((number, line, str(exc)))
    return scan


def set_aside(scan: JournalScan) -> Path:
    """Write the damaged lines of ``scan`` (as ``# line N: reason`` then the raw line) to a new file beside the
    journal, fsynced; return its path. The journal itself is rewritten by the store's compaction afterwards."""
    target = scan.path.with_name(f"{scan.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    with open(target, "xb") as out:
        for number, raw, reason in scan.damaged:
            out.write(f"# line {number}: {reason}\n".encode())
            out.write(raw + b"\n")
        out.flush()
        os.fsync(out.fileno())
    return target


class Journal:
    """The open journal of a store: appends whole lines and fsyncs them; a failed append leaves no partial line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def append(self, record: dict) -> None:
        """Append ``record`` and fsync. On an ``OSError`` (a full disk) the journal is cut back to its previous
        length, so a half-written line never sits before later records, and the error is raised."""
        data = memoryview(encode_record(record))
        size = os.fstat(self._fd).st_size
        try:
            while data:
                data = data[os.write(self._fd, data) :]
            os.fsync(self._fd)
        except OSError:
            try:  # shrinking a file needs no space
                os.ftruncate(self._fd, size)
                os.fsync(self._fd)
            except OSError:
                pass  # a torn tail is dropped at the next start anyway: it was never acknowledged
            raise

    def truncate(self, size: int = 0) -> None:
        """Cut the journal to ``size`` bytes (0: empty it after a compaction) and fsync."""
        os.ftruncate(self._fd, size)
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
