"""One entry point over every protocol, reading the arrays by the names of the ``.npz`` files, and a table."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from centrum.evaluation.dml import dml_metrics
from centrum.evaluation.products import product_metrics
from centrum.evaluation.reid import reid_centroid_metrics, reid_metrics

PROTOCOLS: tuple[str, ...] = ("reid", "reid-centroids", "products", "products-centroids", "dml")
_REQUIRED = {
    "reid": ("query", "gallery", "query_labels", "gallery_labels"),
    "reid-centroids": ("query", "gallery", "query_labels", "gallery_labels"),
    "products": ("query", "gallery", "query_labels", "gallery_labels"),
    "products-centroids": ("query", "gallery", "query_labels", "gallery_labels"),
    "dml": ("embeddings", "labels"),
}


def evaluate_protocol(protocol: str, arrays: Mapping[str, np.ndarray | torch.Tensor], **kwargs) -> dict:
    """Evaluate one protocol on named arrays and return its metrics (fractions, plus counts).

    ``protocol``: ``"reid"`` (:func:`reid_metrics`), ``"reid-centroids"`` (:func:`reid_centroid_metrics`),
    ``"products"`` / ``"products-centroids"`` (:func:`product_metrics` per image / with item centroids)
    or ``"dml"`` (:func:`dml_metrics`). ``arrays`` holds ``query``, ``gallery``, ``query_labels``,
    ``gallery_labels`` and optionally ``query_cameras``, ``gallery_cameras`` (re-id), or ``embeddings``
    and ``labels`` (dml). For ``"reid"`` and ``"products"``, ``distances`` (Q x G, smaller = closer) may
    replace ``query`` and ``gallery`` (``metric`` is then ignored); the centroid protocols need the
    embeddings. ``kwargs`` go to the protocol's function.
    """
    if protocol not in _REQUIRED:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    a = arrays
    from_distances = "distances" in a and protocol != "dml"
    required = _REQUIRED[protocol][2:] if from_distances else _REQUIRED[protocol]
    if from_distances and protocol.endswith("centroids"):
        raise ValueError(
            f"protocol {protocol!r} needs query and gallery embeddings to build centroids; a distances matrix "
            f"only serves the per-image protocols reid and products (given: {', '.join(sorted(a))})"
        )
    missing = [name for name in required if name not in a]
    if missing:
        alternative = " (or distances instead of query and gallery)" if protocol in ("reid", "products") else ""
        raise ValueError(
            f"protocol {protocol!r} needs arrays {', '.join(required)}{alternative}; missing {', '.join(missing)} "
            f"(given: {', '.join(sorted(a)) or 'none'})"
        )
    if protocol == "dml":
        return dml_metrics(a["embeddings"], a["labels"], **kwargs)
    if from_distances:
        if "query" in a or "gallery" in a:
            raise ValueError("arrays hold both distances and query/gallery embeddings: give one of the two")
        pair = (None, None, a["query_labels"], a["gallery_labels"])
        kwargs = {**kwargs, "distances": a["distances"]}
    else:
        pair = (a["query"], a["gallery"], a["query_labels"], a["gallery_labels"])
    if protocol.startswith("products"):
        return product_metrics(*pair, centroids=protocol == "products-centroids", **kwargs)
    fn = reid_metrics if protocol == "reid" else reid_centroid_metrics
    return fn(*pair, a.get("query_cameras"), a.get("gallery_cameras"), **kwargs)


def _is_count(name: str) -> bool:
    return name.startswith("num_")


def format_metrics_table(rows: Mapping[str, Mapping[str, object]]) -> str:
    """A plain-text table: one row per named run or protocol, one column per scalar metric.

    Metrics are shown in percent with two decimals, counts (``num_*``) as integers; lists (the CMC
    curve) are left out, and a metric missing from a row shows as ``-``.
    """
    columns: list[str] = []
    for metrics in rows.values():
        for name, value in metrics.items():
            if isinstance(value, int | float | np.number) and not isinstance(value, bool) and name not in columns:
                columns.append(name)
    cells = [["", *[c if _is_count(c) else f"{c} (%)" for c in columns]]]
    for row_name, metrics in rows.items():
        line = [str(row_name)]
        for c in columns:
            value = metrics.get(c)
            if value is None:
                line.append("-")
            elif _is_count(c):
                line.append(str(int(value)))
            else:
                line.append(f"{100.0 * float(value):.2f}")
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    fmt = [
        r[0].ljust(widths[0]) + "  " + "  ".join(v.rjust(w) for v, w in zip(r[1:], widths[1:], strict=True))
        for r in cells
    ]
    fmt.insert(1, "-" * len(fmt[0]))
    return "\n".join(line.rstrip() for line in fmt)
