"""Lightning callbacks a study adds to each run: the cost of a training step, snapshots of test embeddings, and
the final state (a digest of the weights and the spread of the final test embeddings).

All write into the run folder (``step_cost.json``, ``snapshots/epoch-NNN.npz``, ``ranked_lists.png``,
``final_state.json``) so that the report can be drawn later, from the folders alone, and a resumed run keeps what
it already wrote. None of them changes the training: every analysis runs inside :func:`preserved_rng`, so the
random streams training draws from (augmentations, sampler, dropout, data-loader seeds) are exactly where they
were, and a run with and without the analyses ends with bit-identical weights.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from centrum.io import atomic_write_json, save_npz
from centrum.rng import preserved_rng

_CLEAR_REFS = Path("/proc/self/clear_refs")


_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-memory high-water mark of this process (Linux: ``echo 5 > clear_refs``)."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class StepCost(Callback):
    """Wall time and peak memory of every training step (forward, loss, backward, optimiser step).

    Memory is the step's own working memory: on CUDA ``max_memory_allocated`` during the step minus the memory
    allocated at its start; on CPU (Linux) the process's resident high-water mark during the step minus its
    resident size at the start (the mark is reset before each step). Elsewhere memory is not measured.
    The first ``warmup`` steps are left out of the medians (allocator and thread-pool start-up).
    """

    def __init__(self, run_dir: str | Path, warmup: int = 2) -> None:
        self.path = Path(run_dir) / "step_cost.json"
        self.warmup = warmup
        self.times: list[float] = []
        self.memory: list[int] = []
        self._start = 0.0
        self._base = 0
        self._how = "none"

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
            torch.cuda.reset_peak_memory_stats(pl_module.device)
            self._base = torch.cuda.memory_allocated(pl_module.device)
            self._how = "cuda max_memory_allocated"
        elif _reset_peak_rss():
            self._base = (_status_kib("VmRSS") or 0) * 1024
            self._how = "process resident high-water mark (VmHWM)"
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.times.append(time.perf_counter() - self._start)
        if self._how.startswith("cuda"):
            self.memory.append(int(torch.cuda.max_memory_allocated(pl_module.device)) - self._base)
        elif self._how.startswith("process"):
            self.memory.append((_status_kib("VmHWM") or 0) * 1024 - self._base)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        times = self.times[self.warmup :] or self.times
        memory = self.memory[self.warmup :] or self.memory
        atomic_write_json(
            self.path,
            {
                "steps": len(self.times),
                "median_step_seconds": statistics.median(times) if times else None,
                "median_step_memory_bytes": statistics.median(memory) if memory else None,
                "max_step_memory_bytes": max(memory) if memory else None,
                "memory_measure": self._how,
                "device": str(pl_module.device),
                # other processes on the machine slow every step: the report says when times are not comparable
                "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                "cpu_count": os.cpu_count(),
            },
        )


def snapshot_subset(labels: np.ndarray, classes: int, per_class: int) -> np.ndarray:
    """Indices of a fixed, seed-independent subset: ``per_class`` first images of ``classes`` evenly spaced labels."""
    labels = np.asarray(labels)
    unique = np.unique(labels)
    chosen = unique[np.linspace(0, len(unique) - 1, min(classes, len(unique))).round().astype(int)]
    rows = [np.flatnonzero(labels == c)[:per_class] for c in np.unique(chosen)]
    return np.concatenate(rows) if rows else np.zeros(0, dtype=int)


class EmbeddingSnapshots(Callback):
    """Embeds a fixed subset of the test classes at chosen epochs (0 = before training) into
    ``snapshots/epoch-NNN.npz`` (keys ``embeddings``, ``labels``, ``indices``; ``gallery_*`` too when the
    protocol has a separate gallery), for t-SNE maps over training; after the last epoch it also draws the
    ranked lists of a few queries within that subset into ``ranked_lists.png``."""

    def __init__(
        self,
        run_dir: str | Path,
        epochs: list[int],
        classes: int = 8,
        per_class: int = 20,
        queries: int = 4,
        top_k: int = 5,
    ) -> None:
        self.dir = Path(run_dir) / "snapshots"
        self.ranked = Path(run_dir) / "ranked_lists.png"
        self.epochs = set(epochs)
        self.classes, self.per_class, self.queries, self.top_k = classes, per_class, queries, top_k

    def _subsets(self, trainer: L.Trainer):
        splits = trainer.datamodule.splits
        q = splits.query.subset(snapshot_subset(splits.query.labels, self.classes, self.per_class))
        if splits.gallery is splits.query:
            return q, None
        wanted = np.isin(splits.gallery.labels, np.unique(q.labels))
        g_rows = np.flatnonzero(wanted)
        g_rows = snapshot_subset(splits.gallery.labels[g_rows], self.classes, 2 * self.per_class)
        return q, splits.gallery.subset(np.flatnonzero(wanted)[g_rows])

    def _embed(self, trainer: L.Trainer, pl_module: L.LightningModule, samples) -> np.ndarray:
        from centrum.inference import embed_loader

        emb, idx = embed_loader(pl_module.model, trainer.datamodule.eval_dataloader(samples), pl_module.device)
        out = np.zeros((len(samples), emb.shape[1]), dtype=np.float32)
        out[idx] = emb
        return out

    def _snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> None:
        path = self.dir / f"epoch-{epoch:03d}.npz"
        last = epoch >= (trainer.max_epochs or epoch)
        if not trainer.is_global_zero or path.exists() or not (epoch in self.epochs or last):
            return
        with preserved_rng():
            self._write_snapshot(trainer, pl_module, epoch, path, last)

    def _write_snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int, path: Path, last: bool):
        query, gallery = self._subsets(trainer)
        arrays = {"embeddings": self._embed(trainer, pl_module, query), "labels": np.asarray(query.labels)}
        if gallery is not None:
            arrays["gallery_embeddings"] = self._embed(trainer, pl_module, gallery)
            arrays["gallery_labels"] = np.asarray(gallery.labels)
        names = trainer.datamodule.splits.class_names or {}
        wanted = np.unique(arrays["labels"])
        arrays["class_names"] = np.asarray([str(names.get(int(c), int(c))) for c in wanted])
        arrays["class_ids"] = wanted
        self.dir.mkdir(parents=True, exist_ok=True)
        save_npz(path, epoch=np.asarray(epoch), **arrays)
        if last:
            self._draw_ranked(query, gallery, arrays, epoch, names)

    def _draw_ranked(self, query, gallery, arrays: dict[str, np.ndarray], epoch: int, names: dict) -> None:
        from centrum.reports.plots import plot_ranked_lists

        q_emb, q_lab = arrays["embeddings"], arrays["labels"]
        g_emb = arrays.get("gallery_embeddings", q_emb)
        g_lab = arrays.get("gallery_labels", q_lab)
        picks = [int(np.flatnonzero(q_lab == c)[0]) for c in np.unique(q_lab)[: self.queries]]
        sims = q_emb[picks] @ g_emb.T
        if gallery is None:  # query and gallery are one set: a query never retrieves itself
            sims[np.arange(len(picks)), picks] = -np.inf
        k = min(self.top_k, g_emb.shape[0] - (1 if gallery is None else 0))
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        distances = 1 - np.take_along_axis(sims, order, axis=1)
        plot_ranked_lists(
            query.load,
            (gallery if gallery is not None else query).load,
            picks,
            order,
            q_lab,
            g_lab,
            self.ranked,
            distances=distances,
            title=f"top-{k} of {len(np.unique(q_lab))} test classes, epoch {epoch}\n(cosine distance)",
            class_names={int(c): str(n) for c, n in names.items()} or None,
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0:
            self._snapshot(trainer, pl_module, 0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._snapshot(trainer, pl_module, trainer.current_epoch + 1)


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state (every parameter and buffer, by name, in order): equal digests mean
    bit-identical weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def embedding_spread(embeddings: np.ndarray) -> dict[str, float]:
    """Largest and median pairwise cosine distance (``1 - cos``, off the diagonal) among ``embeddings``: both
    under 1e-3 means the model maps every image to the same point (collapse)."""
    e = np.asarray(embeddings, dtype=np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    d = 1.0 - e @ e.T
    off = d[~np.eye(len(e), dtype=bool)]
    if off.size == 0:
        return {"max_pairwise_cosine_distance": float("nan"), "median_pairwise_cosine_distance": float("nan")}
    return {
        "max_pairwise_cosine_distance": float(off.max()),
        "median_pairwise_cosine_distance": float(np.median(off)),
    }


class FinalState(Callback):
    """After training: ``final_state.json`` with a digest of the final weights (two arms with equal digests at a
    seed trained identically), the spread of the final test embeddings of a fixed subset (up to ``classes`` x
    ``per_class`` images; collapse shows as a largest pairwise cosine distance under 1e-3) and the intra-op
    thread count the run trained with."""

    def __init__(self, run_dir: str | Path, classes: int = 16, per_class: int = 16) -> None:
        self.path = Path(run_dir) / "final_state.json"
        self.classes, self.per_class = classes, per_class

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        from centrum.inference import embed_loader

        with preserved_rng():
            query = trainer.datamodule.splits.query
            subset = query.subset(snapshot_subset(query.labels, self.classes, self.per_class))
            emb, _ = embed_loader(pl_module.model, trainer.datamodule.eval_dataloader(subset), pl_module.device)
        atomic_write_json(
            self.path,
            {
                "weights_sha256": weights_digest(pl_module.model),
                "images": len(emb),
                **embedding_spread(emb),
                "torch_threads": torch.get_num_threads(),
                "global_step": int(trainer.global_step),
            },
        )
