"""One service process per index folder: an exclusive advisory lock on ``<folder>/service.lock``.

Two services writing one folder would interleave their journal lines and each compact over the other's snapshot;
the second to start would also hand out ids the first already gave. :class:`FolderLock` takes an exclusive POSIX
record lock (``lockf``) on the lock file without waiting, so a second service process stops at start with
:class:`FolderInUseError` naming the folder and the holder's process id. The kernel drops the lock when its
holder exits, however it exits (``kill -9`` included), so a crash never leaves a stale lock behind; the file
itself stays, and its content (the last holder's pid) is informational only.

POSIX record locks belong to a process, not to an open file: a process may reopen a folder it holds (what a
restart within one process, or a test that simulates a crash, does), and the first of its stores to close
releases the folder for other processes.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; the folder is not guarded there
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "FolderInUseError", "FolderLock"]

LOCK_FILE = "service.lock"


class FolderInUseError(ValueError):
    """Another live process holds the index folder's lock (a second service on the same folder)."""


class FolderLock:
    """Holds ``<folder>/service.lock`` for this process from :meth:`acquire` to :meth:`release` (or its exit)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        """Take the lock without waiting; :class:`FolderInUseError` when another process holds it."""
        if fcntl is None or self._fd is not None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderInUseError(
                f"index folder {self.path.parent} is in use by another service (pid {holder}): stop it first, "
                "or serve a copy of the folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
