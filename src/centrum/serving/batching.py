"""Dynamic micro-batching: embedding calls of concurrent requests run as one model call."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

import numpy as np

from centrum.inference.protocol import Embedder


class MicroBatcher:
    """Runs ``embedder`` on one worker thread, merging the requests that are waiting into one batch.

    With an ``embed_batch`` (see :class:`~centrum.inference.Embedder`), a request's images are preprocessed by
    the caller (in its own thread); the worker takes the first waiting
    request and every other one already queued (up to ``max_batch`` images), embeds them in one call and hands
    each caller its rows. No timer: a lone request is embedded at once, so one client pays no batching delay,
    while under load the batch grows with the number of waiting clients.
    """

    def __init__(self, embedder: Embedder, max_batch: int = 64) -> None:
        self.embedder = embedder
        self.max_batch = max(1, int(max_batch))
        self._queue: queue.Queue = queue.Queue()
        self._embed = getattr(embedder, "embed_batch", None)
        self.batches = 0  # model calls made (for tests and benchmarks)
        self.images = 0
        self._thread = threading.Thread(target=self._run, name="centrum-embed", daemon=True)
        self._thread.start()

    def embed(self, images: list) -> np.ndarray:
        """Embeddings (N x dim) of PIL ``images``, computed in a batch shared with concurrent callers."""
        if not images:
            return np.empty((0, self.embedder.dim), np.float32)
        work = self.embedder.preprocess.batch(images) if self._embed is not None else images
        future: Future = Future()
        self._queue.put((work, future))
        return future.result()

    def close(self) -> None:
        """Stop the worker after the queued requests."""
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            items, size, stop = [item], len(item[0]), False
            while size < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                items.append(more)
                size += len(more[0])
            try:
                if self._embed is not None:
                    out = self._embed(np.concatenate([work for work, _ in items]))
                else:
                    out = self.embedder.embed_images([im for work, _ in items for im in work])
                self.batches += 1
                self.images += size
                start = 0
                for work, future in items:
                    future.set_result(out[start : start + len(work)])
                    start += len(work)
            except Exception as exc:
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
            if stop:
                return
