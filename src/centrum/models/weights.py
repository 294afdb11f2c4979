"""Pretrained weights: download with a checksum into a cache, unwrap checkpoints, load with a report.

:func:`load_pretrained` accepts a state dict, a local file or a URL (``http(s)://`` or ``file://``),
unwraps the usual checkpoint containers (``{"state_dict": ...}`` from Lightning and the IBN-Net
release, ``{"model": ...}``, ``module.`` prefixes of DataParallel) and aligns key prefixes, so that
torchvision's ResNet-50, the IBN-Net release and centrum's own checkpoints (a whole
:class:`~centrum.models.EmbeddingModel`, or a Lightning module holding one) load into either a
backbone or a whole model. Tensors whose shapes differ are reported and left alone, never loaded.

Checksums follow ``torch.hub``: a published file name ends with the first 8 hex digits of its SHA-256
(``resnet50-0676ba61.pth``), and any prefix of at least 8 hex digits, or the full 64, is accepted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

logger = logging.getLogger("centrum.models")

_URL_SCHEMES = ("http://", "https://", "file://")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network")
_CHUNK_BYTES = 1 << 20


class PublishedWeights(NamedTuple):
    """Where a backbone's published ImageNet weights live and the SHA-256 (prefix) they must have."""

    url: str
    sha256: str


PUBLISHED_WEIGHTS: dict[str, PublishedWeights] = {
    # torchvision's ResNet50_Weights.IMAGENET1K_V1 (76.1 % top-1), the weights the re-id baselines used.
    "resnet50": PublishedWeights("https://download.pytorch.org/models/resnet50-0676ba61.pth", "0676ba61"),
    "resnet50_ibn_a": PublishedWeights(
        "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet50_ibn_a-d9d0bb7b.pth", "d9d0bb7b"
    ),
    # torchvision's GoogLeNet_Weights.IMAGENET1K_V1 (69.8 % top-1).
    "googlenet": PublishedWeights("https://download.pytorch.org/models/googlenet-1378be20.pth", "1378be20"),
}


class ChecksumError(ValueError):
    """A file's SHA-256 differs from the expected one."""


def default_cache_dir() -> Path:
    """The weights cache: ``$CENTRUM_CACHE`` if set, else ``~/.cache/centrum``."""
    env = os.environ.get("CENTRUM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "centrum"


def sha256_of_file(path: str | Path) -> str:
    """Hex SHA-256 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha256_spec(sha256: str) -> str:
    spec = sha256.strip().lower()
    if len(spec) < 8 or len(spec) > 64 or any(c not in "0123456789abcdef" for c in spec):
        raise ValueError(f"sha256 must be 8 to 64 hex digits (a full digest or its published prefix), got {sha256!r}")
    return spec


def verify_sha256(path: str | Path, sha256: str) -> None:
    """Raise :class:`ChecksumError` naming ``path``, the expected and the actual hash if they differ.

    ``sha256`` is a full hex digest or a prefix of at least 8 hex digits (the ``torch.hub`` convention).
    """
    expected = _check_sha256_spec(sha256)
    actual = sha256_of_file(path)
    if not actual.startswith(expected):
        raise ChecksumError(f"checksum mismatch for {path}: expected SHA-256 {expected}, got {actual}")


class _Progress:
    """A one-line download progress bar on stderr."""

    def __init__(self, name: str, total: int | None, enabled: bool) -> None:
        self.name, self.total, self.enabled, self.done, self._last = name, total, enabled, 0, -1

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.total:
            percent = 100 * self.done // self.total
            if percent != self._last:
                self._last = percent
                bar = "#" * (percent // 4)
                sys.stderr.write(f"\rdownloading {self.name} [{bar:<25}] {percent:3d}% of {self.total / 1e6:.1f} MB")
        elif self.done // (10 * _CHUNK_BYTES) != self._last:
            self._last = self.done // (10 * _CHUNK_BYTES)
            sys.stderr.write(f"\rdownloading {self.name}: {self.done / 1e6:.1f} MB")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def download_file(url: str, dest: str | Path, sha256: str | None = None, *, progress: bool = True) -> Path:
    """Download ``url`` (``http(s)://`` or ``file://``) to ``dest`` and return ``dest``.

    The bytes go to a ``<dest>.<random>.part`` file next to ``dest`` first (one per process, so that
    parallel workers do not interleave), which is checked against ``sha256`` (when given) and only
    then renamed to ``dest``, so an interrupted or corrupted download never takes the final name. A
    mismatch deletes the partial file and raises :class:`ChecksumError` naming the URL, the expected
    and the actual hash. Progress goes to stderr unless ``progress`` is false.
    """
    if not url.startswith(_URL_SCHEMES):
        raise ValueError(f"download_file needs an http://, https:// or file:// URL, got {url!r}")
    expected = _check_sha256_spec(sha256) if sha256 is not None else None
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=dest.name + ".", suffix=".part", delete=False) as tmp:
        partial = Path(tmp.name)
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            length = response.headers.get("Content-Length")
            bar = _Progress(dest.name, int(length) if length and length.isdigit() else None, progress)
            try:
                for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            finally:
                bar.close()
    except BaseException as exc:  # an interrupted download must not leave its partial file behind either
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OSError(f"could not download {url} to {dest}: {exc}") from exc
        raise
    actual = digest.hexdigest()
    if expected is not None and not actual.startswith(expected):
        partial.unlink(missing_ok=True)
        raise ChecksumError(
            f"checksum mismatch for {url} (downloaded to {partial}, now deleted): "
            f"expected SHA-256 {expected}, got {actual}"
        )
    os.replace(partial, dest)
    return dest


def cached_download(
    url: str, *, sha256: str | None = None, cache_dir: str | Path | None = None, progress: bool = True
) -> Path:
    """Return the cached copy of ``url`` under ``cache_dir/checkpoints``, downloading it on first use.

    A cached file is checked against ``sha256`` too; a mismatch raises :class:`ChecksumError` naming the
    file (delete it to download again).
    """
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise ValueError(f"cannot derive a file name from URL {url!r}")
    dest = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "checkpoints" / name
    if dest.is_file():
        if sha256 is not None:
            verify_sha256(dest, sha256)
        return dest
    return download_file(url, dest, sha256, progress=progress)


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did with a checkpoint.

    Attributes:
        loaded: model keys that received a tensor from the checkpoint.
        missing: model keys the checkpoint has no tensor for (they keep their current values).
            BatchNorm ``num_batches_tracked`` counters are not listed: old checkpoints lack them.
        unexpected: checkpoint keys that match no model key (for a backbone: the classifier ``fc.*``).
        mismatched: ``(key, checkpoint shape, model shape)`` for names that match with different
            shapes; these are not loaded.
        source: a description of where the weights came from.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    source: str = "state dict"

    @property
    def complete(self) -> bool:
        """True when every model tensor was loaded (unexpected checkpoint keys are allowed)."""
        return not self.missing and not self.mismatched

    def summary(self, max_names: int = 5) -> str:
        """A few lines: counts of loaded, missing, unexpected and mismatched keys, with the first names."""

        def first(names: list[str]) -> str:
            shown = ", ".join(names[:max_names])
            return f": {shown}" + (f", ... ({len(names) - max_names} more)" if len(names) > max_names else "")

        lines = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        if self.missing:
            lines.append(f"  {len(self.missing)} missing (left as initialised){first(self.missing)}")
        if self.unexpected:
            lines.append(f"  {len(self.unexpected)} unexpected (ignored){first(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{k} {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched]
            lines.append(f"  {len(self.mismatched)} with mismatched shapes (not loaded){first(shapes)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _unwrap_checkpoint(checkpoint: Any, source: str) -> dict[str, torch.Tensor]:
    """Dig the tensor dictionary out of a checkpoint container."""
    current = checkpoint
    for _ in range(4):
        if not isinstance(current, Mapping):
            break
        if current and all(isinstance(v, torch.Tensor) for v in current.values()):
            return {str(k): v for k, v in current.items()}
        inner = next((current[k] for k in _WRAPPER_KEYS if isinstance(current.get(k), Mapping)), None)
        if inner is None:
            if isinstance(current.get("model"), nn.Module):
                return dict(current["model"].state_dict())
            break
        current = inner
    if isinstance(current, nn.Module):
        return dict(current.state_dict())
    if isinstance(current, Mapping):
        tensors = {str(k): v for k, v in current.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    kind = type(checkpoint).__name__
    keys = list(checkpoint)[:8] if isinstance(checkpoint, Mapping) else []
    raise ValueError(
        f"{source} holds no state dict: expected a mapping of parameter names to tensors, possibly under "
        f"one of {', '.join(repr(k) for k in _WRAPPER_KEYS)}; got a {kind}" + (f" with keys {keys}" if keys else "")
    )


def _frequent_prefixes(keys: list[str], min_share: float = 0.5, max_depth: int = 3) -> list[str]:
    """Dotted prefixes (``"module."``, ``"model.backbone."``) shared by at least ``min_share`` of ``keys``."""
    counts: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        for depth in range(1, min(max_depth, len(parts) - 1) + 1):
            prefix = ".".join(parts[:depth]) + "."
            counts[prefix] = counts.get(prefix, 0) + 1
    return [p for p, n in counts.items() if n >= min_share * len(keys)]


def _align_keys(source: dict[str, torch.Tensor], target_keys: set[str]) -> dict[str, torch.Tensor]:
    """Rename ``source`` keys by stripping one common prefix and adding another to best match ``target_keys``.

    The pair (strip, add) that matches the most keys wins; ties go to the smallest change, so a
    checkpoint whose keys already match is taken as is.
    """
    strips = ["", *_frequent_prefixes(list(source))]
    adds = ["", *_frequent_prefixes(sorted(target_keys))]
    best, best_score = ("", ""), (-1, 0)
    for strip in strips:
        for add in adds:
            matched = sum(1 for k in source if k.startswith(strip) and add + k[len(strip) :] in target_keys)
            score = (matched, -(len(strip) + len(add)))
            if score > best_score:
                best, best_score = (strip, add), score
    strip, add = best
    if not strip and not add:
        return dict(source)
    return {(add + k[len(strip) :] if k.startswith(strip) else k): v for k, v in source.items()}


def _read_checkpoint(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"could not read {path} as a tensor checkpoint ({type(exc).__name__}: {exc}). centrum loads with "
            f"torch.load(weights_only=True); if the file comes from a source you trust and holds other Python "
            f"objects, load it yourself with torch.load(path, weights_only=False) and pass the dict"
        ) from exc


def resolve_checkpoint(
    source: str | Path, *, sha256: str | None = None, cache_dir: str | Path | None = None, progress: bool = True
) -> Path:
    """Return a local file for ``source``: a URL is downloaded into the cache, a path must exist."""
    if isinstance(source, str) and source.startswith(_URL_SCHEMES):
        return cached_download(source, sha256=sha256, cache_dir=cache_dir, progress=progress)
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if sha256 is not None:
        verify_sha256(path, sha256)
    return path


def load_pretrained(
    module: nn.Module,
    source: str | Path | Mapping[str, Any],
    *,
    sha256: str | None = None,
    cache_dir: Path | None = None,
    strict: bool = False,
    progress: bool = True,
) -> LoadReport:
    """Load weights from ``source`` into ``module`` and report what matched.

    Args:
        module: the backbone or model to load into (in place).
        source: a state dict or checkpoint dict, a local file, or an ``http(s)://`` / ``file://`` URL
            (downloaded once into ``cache_dir``).
        sha256: expected SHA-256 of the file (full digest or a prefix of at least 8 hex digits).
        cache_dir: download cache; default :func:`default_cache_dir`.
        strict: raise unless every model tensor is loaded and the checkpoint has no unexpected keys.
        progress: show a download progress bar.

    Returns:
        A :class:`LoadReport`; its summary is logged, and a warning is issued when model tensors stay
        unloaded (missing or mismatched).

    Raises:
        ValueError: the checkpoint shares no tensor with the model (it is for another model), or
            ``strict`` and anything did not match. The message gives the counts and first key names.
        FileNotFoundError: ``source`` is a path that does not exist.
        ChecksumError: the file's hash differs from ``sha256``.
    """
    if isinstance(source, Mapping):
        description = "the given state dict"
        checkpoint: Any = source
    else:
        path = resolve_checkpoint(source, sha256=sha256, cache_dir=cache_dir, progress=progress)
        description = str(source) if str(source) == str(path) else f"{source} ({path})"
        checkpoint = _read_checkpoint(path)
    state = _unwrap_checkpoint(checkpoint, description)
    target = module.state_dict()
    state = _align_keys(state, set(target))

    report = LoadReport(source=description)
    to_load: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in target:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(target[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(target[key].shape)))
        else:
            to_load[key] = value
    mismatched_keys = {k for k, _, _ in report.mismatched}
    report.missing = [
        k for k in target if k not in to_load and k not in mismatched_keys and not k.endswith("num_batches_tracked")
    ]
    report.loaded = [k for k in target if k in to_load]

    counts = (
        f"{len(report.missing)} missing, {len(report.unexpected)} unexpected, "
        f"{len(report.mismatched)} with mismatched shapes"
    )
    # BatchNorm counters are scalars and match any model with BatchNorm at the same names; they prove nothing.
    if not any(not k.endswith("num_batches_tracked") for k in report.loaded):
        raise ValueError(
            f"{description} does not fit {type(module).__name__}: no tensor matched by name and shape, BatchNorm "
            f"counters aside ({len(target)} model tensors; {counts}). Is it a checkpoint of another model?\n"
            f"{report.summary()}"
        )
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise ValueError(
            f"strict loading of {description} into {type(module).__name__} failed: {counts}\n{report.summary()}"
        )
    module.load_state_dict(to_load, strict=False)
    logger.info("%s", report.summary())
    if report.missing or report.mismatched:
        warnings.warn(
            f"{type(module).__name__} is only partly initialised from {description}: {counts}\n{report.summary()}",
            stacklevel=2,
        )
    return report
