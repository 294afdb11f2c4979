"""Qdrant backends through ``qdrant-client`` (optional extra: ``pip install qdrant-client``).

Where the points live: ``path=`` a folder (local mode: embedded, pure Python, exact brute-force search: for
one machine and tests), ``url=`` (+ ``api_key=``) a Qdrant server or cluster (HNSW search, sharding and
replication done by Qdrant), or ``location=":memory:"``. Local clients are shared per folder inside one
process (a local folder can be opened by one client at a time), so an image collection and a centroid
collection can live in the same folder.

Per-image entries are points with payload ``label``, ``camera``, ``path``; the re-identification exclusion
is a payload filter (``must_not`` label = query label and camera = query camera), applied by Qdrant before
the top-k. Class centroids are their own collection, one point per label (point id = label) with two named
vectors: ``centroid`` (searched, in the metric) and ``mean`` (the running mean kept exactly: Qdrant
normalises cosine vectors, which would lose the mean's length), and payload ``count``. Enrolment reads
the touched classes, updates their running means and writes them back: one writer at a time per class.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Iterator

import numpy as np

from centrum.retrieval.backends.base import (
    SearchHits,
    as_ints,
    as_matrix,
    as_paths,
    check_k,
    check_metric,
    empty_hits,
    exclusion_pairs,
    l2_normalize,
    order_hits,
    running_mean,
    to_distance,
)
from centrum.retrieval.backends.exact import centroid_hits, check_class_labels

UPSERT_BATCH = 1024
SCROLL_BATCH = 4096
_LOCAL_CLIENTS: dict[str, object] = {}


def import_qdrant():
    """``(QdrantClient, models)``, or a ``ValueError`` saying how to install qdrant-client."""
    try:
        from qdrant_client import QdrantClient, models
    except ImportError as exc:
        raise ValueError("the qdrant backend needs qdrant-client: pip install qdrant-client") from exc
    return QdrantClient, models


class QdrantFolderInUseError(ValueError):
    """A local Qdrant folder that another process holds open (Qdrant's local mode is one process at a time)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = pathlib.Path(folder)
        super().__init__(
            f"qdrant folder {self.folder} is in use by another process: Qdrant's local mode (a --qdrant-path "
            "folder) is one process at a time; stop the other process (a centrum serve, index build or index "
            "search on this folder), or run a Qdrant server and use --qdrant-url to share the index"
        )


META_FILE = "meta.json"  # qdrant-client's local mode: the folder's table of collections


def qdrant_client(
    path=None,
    url: str | None = None,
    api_key: str | None = None,
    location: str | None = None,
    *,
    create: bool = True,
):
    """A client for a local folder (``path``, shared per folder in this process), a server (``url``,
    ``api_key``) or ``location`` (e.g. ``":memory:"``); exactly one of path, url, location.

    A local folder is created when missing unless ``create=False`` (reopening an index: a missing folder, or
    one without Qdrant's ``meta.json``, is then a ``FileNotFoundError`` naming it, and nothing is created).
    A folder another process holds is a :class:`QdrantFolderInUseError`; a damaged one a ``ValueError`` naming it.
    """
    QdrantClient, _ = import_qdrant()
    given = [name for name, value in (("path", path), ("url", url), ("location", location)) if value is not None]
    if len(given) != 1:
        raise ValueError(f"the qdrant backend needs exactly one of path=, url=, location=; got {given or 'none'}")
    if url is not None:
        return QdrantClient(url=url, api_key=api_key)
    if location is not None:
        return QdrantClient(location=location)
    folder = pathlib.Path(path).expanduser().resolve()
    key = str(folder)
    client = _LOCAL_CLIENTS.get(key)
    if client is None:
        if not create:
            if not folder.is_dir():
                raise FileNotFoundError(f"qdrant folder {folder} does not exist (it was moved or deleted)")
            if not (folder / META_FILE).is_file():
                raise FileNotFoundError(
                    f"qdrant folder {folder} holds no Qdrant data: {folder / META_FILE} does not exist"
                )
        elif folder.exists() and not folder.is_dir():
            raise ValueError(f"qdrant folder {folder} exists and is not a folder")
        client = _LOCAL_CLIENTS[key] = _open_local(QdrantClient, folder)
    return client


def _open_local(QdrantClient, folder: pathlib.Path):
    """``QdrantClient(path=folder)`` with its failures in words: the folder locked by another process, a
    damaged ``meta.json``, damaged collection files."""
    import json
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a failed open warns again from the client's __del__
            return QdrantClient(path=str(folder))
    except RuntimeError as exc:
        if "already accessed by another instance" in str(exc):
            raise QdrantFolderInUseError(folder) from None
        raise ValueError(f"qdrant folder {folder} cannot be opened: {_first_line(exc)}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"qdrant folder {folder} is damaged: {folder / META_FILE} is not valid JSON "
            f"({exc.msg} at line {exc.lineno} column {exc.colno}); restore the folder or build the index again"
        ) from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # a damaged store fails in many ways (KeyError, pydantic, sqlite3, pickle)
        raise ValueError(
            f"qdrant folder {folder} is damaged and cannot be opened ({type(exc).__name__}: {_first_line(exc)}); "
            "restore the folder or build the index again"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def close_local(path) -> None:
    """Close the shared local client of the folder ``path`` (its data stays on disk)."""
    client = _LOCAL_CLIENTS.pop(str(pathlib.Path(path).resolve()), None)
    if client is not None:
        client.close()


@contextlib.contextmanager
def qdrant_errors(where: str) -> Iterator[None]:
    """Turn a Qdrant server's connection or response error into a one-line ``ValueError`` naming ``where``."""
    try:
        yield
    except Exception as exc:
        module = type(exc).__module__ or ""
        if not module.startswith(("qdrant_client", "httpx", "httpcore", "grpc")):
            raise
        raise ValueError(f"qdrant at {where}: {type(exc).__name__}: {_first_line(exc)}") from exc


def _distance(models, metric: str):
    return {"cosine": models.Distance.COSINE, "euclidean": models.Distance.EUCLID, "dot": models.Distance.DOT}[metric]


class _QdrantCollection:
    """Shared set-up: open or create a collection and check its vector size and distance."""

    def __init__(self, dim, metric, collection, path, url, api_key, location, client, create=True) -> None:
        self.dim = int(dim)
        self.metric = check_metric(metric)
        self.collection = str(collection)
        _, self.models = import_qdrant()
        self.client = client if client is not None else qdrant_client(path, url, api_key, location, create=create)
        self.local = url is None and client is None
        self.path = path
        self.create = bool(create)
        self.where = f"folder {path}" if path is not None else (url or location or "the given client")

    def _check_or_create(self, vectors_config, size_of) -> None:
        if not self.create and not self.client.collection_exists(self.collection):
            raise ValueError(
                f"qdrant {self.where} holds no collection {self.collection!r}: it was deleted or replaced since "
                "the index was built"
            )
        if self.client.collection_exists(self.collection):
            info = self.client.get_collection(self.collection)
            size, distance = size_of(info.config.params.vectors)
            if size != self.dim or distance != _distance(self.models, self.metric):
                raise ValueError(
                    f"qdrant collection {self.collection!r} holds {size}-d {distance} vectors, "
                    f"not {self.dim}-d {self.metric}"
                )
        else:
            self.client.create_collection(self.collection, vectors_config=vectors_config)

    def _scroll(self, with_payload, with_vectors=False, scroll_filter=None):
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.collection,
                scroll_filter=scroll_filter,
                limit=SCROLL_BATCH,
                offset=offset,
                with_payload=with_payload,
                with_vectors=with_vectors,
            )
            yield from points
            if offset is None:
                return

    def __len__(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def save(self, directory: str | os.PathLike | None = None) -> None:
        """Nothing to write: Qdrant persists every upsert itself (local folder or server). ``directory`` is
        accepted for interface compatibility and ignored."""

    def close(self) -> None:
        """Close a local folder's shared client (data stays on disk); a no-op for a server client."""
        if self.local and self.path is not None:
            close_local(self.path)


class QdrantImageIndex(_QdrantCollection):
    """Per-image search on a Qdrant collection (payload: label, camera, path; point id = entry id).

    ``exact=True`` asks a server for brute-force search (local mode is always exact); otherwise the
    server's HNSW with ``hnsw_ef`` candidates. ``create=False`` opens an existing collection only: a missing
    folder or collection is an error instead of a new, empty index.
    """

    backend = "qdrant"
    kind = "image"

    def __init__(
        self,
        dim: int,
        metric: str = "cosine",
        *,
        collection: str = "centrum_images",
        path: str | os.PathLike | None = None,
        url: str | None = None,
        api_key: str | None = None,
        location: str | None = None,
        client=None,
        exact: bool = False,
        hnsw_ef: int | None = None,
        create: bool = True,
    ) -> None:
        super().__init__(dim, metric, collection, path, url, api_key, location, client, create)
        m = self.models
        self._check_or_create(
            m.VectorParams(size=self.dim, distance=_distance(m, self.metric)), lambda v: (v.size, v.distance)
        )
        if not self.local:  # payload indices make the label/camera filters fast on a server
            for field in ("label", "camera"):
                self.client.create_payload_index(self.collection, field, m.PayloadSchemaType.INTEGER)
        self.search_params = m.SearchParams(exact=bool(exact), hnsw_ef=hnsw_ef) if (exact or hnsw_ef) else None
        self._next_id: int | None = None

    def __repr__(self) -> str:
        return f"QdrantImageIndex(collection={self.collection!r}, dim={self.dim}, metric={self.metric!r})"

    def _allocate(self, ids, n: int) -> np.ndarray:
        if ids is not None:
            out = as_ints(ids, n, "ids")
            if (out < 0).any() or np.unique(out).shape[0] != n:
                raise ValueError("ids must be distinct non-negative integers")
            taken = self.client.retrieve(self.collection, [int(i) for i in out], with_payload=False)
            if taken:
                raise ValueError(f"ids already in the collection: {[p.id for p in taken][:5]}")
            if self._next_id is not None:
                self._next_id = max(self._next_id, int(out.max()) + 1)
            return out
        if self._next_id is None:  # once per process: the largest id stored so far
            self._next_id = max((int(p.id) for p in self._scroll(with_payload=False)), default=-1) + 1
        out = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        return out

    def add(self, embeddings, labels, paths=None, cameras=None, ids=None) -> np.ndarray:
        """Upsert N embeddings as points with payload label, camera, path; return their ids."""
        x = as_matrix(embeddings, self.dim)
        n = x.shape[0]
        lab, cams, names = as_ints(labels, n, "labels", None), as_ints(cameras, n, "cameras"), as_paths(paths, n)
        new_ids = self._allocate(ids, n)
        for start in range(0, n, UPSERT_BATCH):
            stop = min(n, start + UPSERT_BATCH)
            self.client.upsert(
                self.collection,
                points=self.models.Batch(
                    ids=[int(i) for i in new_ids[start:stop]],
                    vectors=x[start:stop].tolist(),
                    payloads=[
                        {"label": int(lab[i]), "camera": int(cams[i]), "path": names[i]} for i in range(start, stop)
                    ],
                ),
                wait=True,
            )
        return new_ids

    def remove(self, ids) -> int:
        """Delete the points with these ids; return how many existed."""
        wanted = [int(i) for i in np.atleast_1d(np.asarray(ids))]
        existing = self.client.retrieve(self.collection, wanted, with_payload=False) if wanted else []
        if existing:
            self.client.delete(
                self.collection, points_selector=self.models.PointIdsList(points=[p.id for p in existing]), wait=True
            )
        return len(existing)

    def _label_filter(self, label: int):
        m = self.models
        return m.Filter(must=[m.FieldCondition(key="label", match=m.MatchValue(value=int(label)))])

    def remove_class(self, label: int) -> int:
        """Delete every point with this label (a payload-filter delete); return how many there were."""
        flt = self._label_filter(label)
        count = int(self.client.count(self.collection, count_filter=flt, exact=True).count)
        if count:
            self.client.delete(self.collection, points_selector=self.models.FilterSelector(filter=flt), wait=True)
        return count

    def _reid_filter(self, label: int, camera: int):
        m = self.models
        same = m.Filter(
            must=[
                m.FieldCondition(key="label", match=m.MatchValue(value=int(label))),
                m.FieldCondition(key="camera", match=m.MatchValue(value=int(camera))),
            ]
        )
        return m.Filter(must_not=[same])

    def search(self, queries, k: int = 10, query_labels=None, query_cameras=None) -> SearchHits:
        """k nearest points of each query (one batched request); the re-id rule as a payload filter."""
        k = check_k(k)
        q = as_matrix(queries, self.dim, "queries")
        exclude = exclusion_pairs(query_labels, query_cameras, q.shape[0])
        hits = empty_hits(q.shape[0], k)
        if len(self) == 0:
            return hits
        m = self.models
        requests = [
            m.QueryRequest(
                query=q[i].tolist(),
                limit=k,
                filter=self._reid_filter(exclude[0][i], exclude[1][i]) if exclude is not None else None,
                params=self.search_params,
                with_payload=True,
            )
            for i in range(q.shape[0])
        ]
        responses = self.client.query_batch_points(self.collection, requests=requests)
        scores = np.full((q.shape[0], k), np.nan, np.float64)
        payload: dict[int, dict] = {}
        for i, response in enumerate(responses):
            for j, point in enumerate(response.points):
                hits.ids[i, j] = int(point.id)
                scores[i, j] = point.score
                payload[int(point.id)] = point.payload or {}
        found = hits.ids >= 0
        dist = np.where(found, to_distance(np.nan_to_num(scores), self.metric), np.inf).astype(np.float32)
        ids, dist = order_hits(hits.ids, dist)
        hits.ids, hits.distances = ids, dist
        for (i, j), point_id in np.ndenumerate(ids):
            if point_id >= 0:
                p = payload[int(point_id)]
                hits.labels[i, j] = p.get("label", -1)
                hits.cameras[i, j] = p.get("camera", -1)
                hits.paths[i, j] = p.get("path", "")
        return hits

    def class_counts(self) -> dict[int, int]:
        """The number of points of each label (a scroll over the label payloads)."""
        counts: dict[int, int] = {}
        for point in self._scroll(with_payload=["label"]):
            label = int(point.payload["label"])
            counts[label] = counts.get(label, 0) + 1
        return dict(sorted(counts.items()))


class QdrantCentroidStore(_QdrantCollection):
    """Class centroids as their own Qdrant collection (point id = label), updated as a running mean.
    ``create=False`` opens an existing collection only (see :class:`QdrantImageIndex`)."""

    backend = "qdrant"
    kind = "centroid"

    def __init__(
        self,
        dim: int,
        metric: str = "cosine",
        *,
        collection: str = "centrum_centroids",
        path: str | os.PathLike | None = None,
        url: str | None = None,
        api_key: str | None = None,
        location: str | None = None,
        client=None,
        create: bool = True,
    ) -> None:
        super().__init__(dim, metric, collection, path, url, api_key, location, client, create)
        m = self.models
        config = {
            "centroid": m.VectorParams(size=self.dim, distance=_distance(m, self.metric)),
            "mean": m.VectorParams(size=self.dim, distance=m.Distance.DOT),  # Dot: stored as given
        }
        self._check_or_create(config, lambda v: (v["centroid"].size, v["centroid"].distance))

    def __repr__(self) -> str:
        return f"QdrantCentroidStore(collection={self.collection!r}, dim={self.dim}, metric={self.metric!r})"

    def add(self, embeddings, labels) -> None:
        """Enrol N embeddings: read the touched classes' means and counts, update, write back."""
        x = as_matrix(embeddings, self.dim)
        lab = check_class_labels(labels, x.shape[0])
        if self.metric == "cosine":
            x = l2_normalize(x)
        unique, inverse = np.unique(lab, return_inverse=True)
        sums = np.zeros((unique.shape[0], self.dim), np.float64)
        np.add.at(sums, inverse, x.astype(np.float64))
        added = np.bincount(inverse, minlength=unique.shape[0])
        old = np.zeros((unique.shape[0], self.dim), np.float64)
        old_counts = np.zeros(unique.shape[0], np.int64)
        row_of = {int(v): r for r, v in enumerate(unique)}
        for start in range(0, unique.shape[0], UPSERT_BATCH):
            chunk = [int(v) for v in unique[start : start + UPSERT_BATCH]]
            for point in self.client.retrieve(self.collection, chunk, with_payload=["count"], with_vectors=["mean"]):
                r = row_of[int(point.id)]
                old[r] = point.vector["mean"]
                old_counts[r] = int(point.payload["count"])
        means, totals = running_mean(old, old_counts, sums, added)
        for start in range(0, unique.shape[0], UPSERT_BATCH):
            stop = min(unique.shape[0], start + UPSERT_BATCH)
            chunk = means[start:stop].astype(np.float32).tolist()
            self.client.upsert(
                self.collection,
                points=self.models.Batch(
                    ids=[int(v) for v in unique[start:stop]],
                    vectors={"centroid": chunk, "mean": chunk},
                    payloads=[{"label": int(unique[r]), "count": int(totals[r])} for r in range(start, stop)],
                ),
                wait=True,
            )

    def remove_class(self, label: int) -> int:
        """Delete the class ``label``; return its count (0 if absent)."""
        found = self.client.retrieve(self.collection, [int(label)], with_payload=["count"])
        if not found:
            return 0
        self.client.delete(self.collection, points_selector=self.models.PointIdsList(points=[int(label)]), wait=True)
        return int(found[0].payload["count"])

    def search(self, queries, k: int = 10) -> SearchHits:
        """k nearest class centroids of each query (one batched request)."""
        k = check_k(k)
        q = as_matrix(queries, self.dim, "queries")
        if len(self) == 0:
            return empty_hits(q.shape[0], k)
        m = self.models
        requests = [m.QueryRequest(query=q[i].tolist(), using="centroid", limit=k) for i in range(q.shape[0])]
        responses = self.client.query_batch_points(self.collection, requests=requests)
        ids = np.full((q.shape[0], k), -1, np.int64)
        scores = np.zeros((q.shape[0], k), np.float64)
        for i, response in enumerate(responses):
            for j, point in enumerate(response.points):
                ids[i, j], scores[i, j] = int(point.id), point.score
        dist = to_distance(scores, self.metric)
        ids, dist = order_hits(ids, np.where(ids < 0, np.inf, dist).astype(np.float32))
        return centroid_hits(ids, dist)

    def centroids(self) -> tuple[np.ndarray, np.ndarray]:
        """Class labels (sorted) and their running means."""
        points = list(self._scroll(with_payload=False, with_vectors=["mean"]))
        labels = np.array([int(p.id) for p in points], np.int64)
        means = np.array([p.vector["mean"] for p in points], np.float32).reshape(-1, self.dim)
        order = np.argsort(labels)
        return labels[order], means[order]

    def class_counts(self) -> dict[int, int]:
        """The number of embeddings averaged into each centroid."""
        return dict(sorted((int(p.id), int(p.payload["count"])) for p in self._scroll(with_payload=["count"])))
