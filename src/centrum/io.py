"""Files centrum writes and reads: atomic replacement and safe loading.

Every file centrum writes over an existing one goes through :func:`atomic_write`: the bytes are written to a
temporary file in the same folder, flushed to disk and renamed over the target, so that a crash (even SIGKILL)
mid-write leaves either the old file or the new one, never half of either. The file gets ordinary permissions
(0666 minus the umask, as ``open`` would give), not the 0600 of :func:`tempfile.mkstemp`. Temporary files left
by a killed writer start with ``.`` and end with ``.tmp``; the next write to the same target removes them.

:func:`safe_torch_load` reads PyTorch files with ``weights_only=True`` (tensors, numbers, strings, containers):
a file that would run code when unpickled is refused with a message instead of executed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any

__all__ = [
    "DamagedFileError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "read_npz",
    "replace_directory",
    "safe_torch_load",
    "save_figure",
    "save_npz",
]

_TMP_SUFFIX = ".tmp"
_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"  # an archive with no member (np.savez of nothing)
_NPY_MAGIC = b"\x93NUMPY"
_PICKLE_PROTO = 0x80  # first byte of a pickle of protocol 2+, and of torch.save's legacy format


class DamagedFileError(ValueError):
    """A file that is not what it should be (damaged, truncated, or another kind of file).

    ``path`` is the file; ``reason`` says what is wrong with it in words, without the path, so that a caller
    can put the file's role in front (``"--embeddings file X is not a readable .npz archive: <reason>"``).
    """

    def __init__(self, path: str | os.PathLike, reason: str, kind: str = "file") -> None:
        self.path = pathlib.Path(path)
        self.reason = reason
        super().__init__(f"{self.path} is not a readable {kind}: {reason}")


def _head(path: pathlib.Path, n: int = 8) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(n)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_leftovers(target: pathlib.Path) -> None:
    """Remove temporary files that an earlier, killed writer of ``target`` left in its folder."""
    for stale in target.parent.glob(f".{target.name}.*{_TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            stale.unlink()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on a clean exit, fsync it and rename it over ``path``.

    ``mode`` is ``"wb"`` or ``"w"`` (UTF-8 text). On an exception the temporary file is removed and ``path`` is
    untouched. Raises ``ValueError`` naming the folder when it cannot be written (missing, read-only).

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_write(target, "w") as f:
    ...     _ = f.write("hello")
    >>> target.read_text()
    'hello'
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    target = pathlib.Path(path)
    folder = target.parent if str(target.parent) else pathlib.Path(".")
    if not folder.is_dir():
        raise ValueError(f"cannot write {target}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write {target}: folder {folder} is not writable")
    _remove_leftovers(target)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_TMP_SUFFIX, dir=folder)
    except OSError as exc:
        raise ValueError(f"cannot write {target}: {exc.strerror or exc}") from exc
    tmp = pathlib.Path(tmp_name)
    try:
        os.chmod(fd, 0o666 & ~_umask())
        handle = os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {}))
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_write`); return the path."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return pathlib.Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Replace ``path`` with the UTF-8 ``text`` atomically (see :func:`atomic_write`); return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> pathlib.Path:
    """Replace ``path`` with ``data`` as strict JSON (no NaN/Infinity: ``ValueError`` instead), atomically."""
    text = json.dumps(data, indent=indent, allow_nan=False, default=_json_default)
    return atomic_write_text(path, text + "\n")


def _json_default(value: Any) -> Any:
    # NumPy scalars and arrays, which json does not know
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def save_npz(path: str | os.PathLike, **arrays: Any) -> pathlib.Path:
    """Write NumPy arrays to an ``.npz`` file atomically (no pickled objects: ``allow_pickle`` stays off)."""
    import numpy as np

    target = pathlib.Path(path)
    if target.suffix != ".npz":  # np.savez would append .npz to a file object's name otherwise unnoticed
        raise ValueError(f"embeddings file {target} must end in .npz")
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write_bytes(target, buffer.getvalue())


def read_npz(path: str | os.PathLike) -> dict[str, Any]:
    """Every array of an ``.npz`` archive, read without unpickling anything.

    Raises ``FileNotFoundError`` for a missing file and :class:`DamagedFileError` (a ``ValueError``) whose
    ``reason`` says in words why the file cannot be read: empty, a single-array ``.npy``, not an ``.npz`` at all
    (random bytes, text), a damaged or truncated archive, or an array of pickled Python objects.
    """
    import zipfile

    import numpy as np

    target = pathlib.Path(path)
    if not target.is_file():
        raise FileNotFoundError(f"{target} does not exist")
    head = _head(target)
    kind = ".npz archive"
    if not head:
        raise DamagedFileError(target, "the file is empty (0 bytes)", kind)
    if head.startswith(_NPY_MAGIC):
        raise DamagedFileError(target, "it is a single-array .npy file, not an .npz archive", kind)
    if not head.startswith((_ZIP_MAGIC, _EMPTY_ZIP_MAGIC)):
        # without this check numpy falls back to unpickling and calls any file "pickled (object) data"
        raise DamagedFileError(target, "it is not a valid .npz file (damaged, or not an .npz file at all)", kind)
    arrays: dict[str, Any] = {}
    try:
        with np.load(target, allow_pickle=False) as data:
            for name in data.files:
                try:
                    arrays[name] = data[name]
                except ValueError as exc:
                    if "allow_pickle" not in str(exc):
                        raise
                    raise DamagedFileError(
                        target, f"array {name!r} holds pickled Python objects, which centrum never loads", kind
                    ) from None
    except DamagedFileError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DamagedFileError(target, f"the archive is damaged or truncated ({detail})", kind) from exc
    return arrays


def replace_directory(staging: str | os.PathLike, target: str | os.PathLike) -> pathlib.Path:
    """Put the folder ``staging`` in the place of ``target`` (a folder, or nothing) and remove the old one.

    On Linux the two are swapped in one atomic step (``renameat2(RENAME_EXCHANGE)``), so that a reader or a
    crash sees the old folder or the new one, never neither. Elsewhere (or on a file system without it) the
    old folder is first renamed aside (``.NAME.old-*``), then the new one moved in: a crash in between leaves
    both, named, with ``target`` missing. Both folders must be on the same file system (same parent).
    """
    import shutil

    new, old = pathlib.Path(staging), pathlib.Path(target)
    if not old.exists():
        os.replace(new, old)
        return old
    if not _exchange(new, old):
        aside = pathlib.Path(tempfile.mkdtemp(prefix=f".{old.name}.old-", dir=old.parent))
        aside.rmdir()
        os.replace(old, aside)
        os.replace(new, old)
        new = aside
    shutil.rmtree(new, ignore_errors=True)  # ``new`` now holds the old folder
    with contextlib.suppress(OSError):
        dir_fd = os.open(old.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return old


def _exchange(a: pathlib.Path, b: pathlib.Path) -> bool:
    """Swap two paths atomically with Linux's renameat2; False where that is not available."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return done == 0


def save_figure(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> pathlib.Path:
    """Save a Matplotlib figure atomically, in the format of ``path``'s suffix (PNG by default)."""
    target = pathlib.Path(path)
    fmt = target.suffix.lstrip(".") or "png"
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, **savefig_kwargs)
    return atomic_write_bytes(target, buffer.getvalue())


def safe_torch_load(
    path: str | os.PathLike,
    map_location: Any = "cpu",
    what: str = "file",
    allowed: Callable[[], list[Any]] | None = None,
) -> Any:
    """Load a PyTorch file with ``weights_only=True``; refuse, with a one-line ``ValueError``, a file that
    would run code.

    ``what`` names the file's role in messages ("checkpoint", "index"). ``allowed`` may return extra classes
    to allow-list (``torch.serialization.add_safe_globals``), e.g. a config dataclass stored in a checkpoint.
    Raises ``FileNotFoundError`` for a missing file.
    """
    import pickle

    import torch

    target = pathlib.Path(path)
    if not target.is_file():
        raise FileNotFoundError(f"{what} {target} does not exist")
    head = _head(target)
    if not head:
        raise ValueError(f"{what} {target} is empty (0 bytes): not a PyTorch file")
    if not head.startswith(_ZIP_MAGIC) and head[0] != _PICKLE_PROTO:
        # torch.save writes a zip archive (or, in its legacy format, a pickle); anything else fails deep in the
        # unpickler with a meaningless message such as ": 101"
        raise ValueError(
            f"{what} {target} is not a PyTorch file (it may be damaged, or be another kind of file): "
            "a file written by torch.save starts as a zip archive"
        )
    safe_globals = allowed() if allowed is not None else []
    try:
        with torch.serialization.safe_globals(safe_globals):
            return torch.load(target, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{what} {target} was refused: it holds Python objects that could run code when loaded ({first}); "
            "centrum loads only tensors and plain data"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, KeyError | EOFError):  # the unpickler's own words (a bare number, "Ran out of input")
            reason = "its contents end early or are corrupt"
        raise ValueError(
            f"{what} {target} could not be read as a PyTorch file (damaged or truncated): {reason}"
        ) from exc
