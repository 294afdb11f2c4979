"""Embedding image sets with a model and evaluating them under a dataset's protocol (no Lightning)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from centrum.data import DatasetSplits, SampleList
from centrum.distances import l2_normalize
from centrum.evaluation import evaluate_protocol

DEFAULT_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "reid": ("reid", "reid-centroids"),
    "products": ("products", "products-centroids"),
    "dml": ("dml",),
}


@dataclass
class Embeddings:
    """Embeddings of an image set with what is known of each image (rows aligned)."""

    embeddings: np.ndarray
    labels: np.ndarray
    cameras: np.ndarray
    paths: list[str]


def embed_batch(model: nn.Module, images: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """Inference features (``model.embed``) of a batch, not normalised; with ``flip``, the mean of the features
    of the images and of their horizontal mirrors (test-time augmentation)."""
    out = model.embed(images).float()
    if flip:
        out = 0.5 * (out + model.embed(images.flip(-1)).float())
    return out


@torch.no_grad()
def embed_loader(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device | str = "cpu",
    normalize: bool = True,
    desc: str = "embed",
    flip: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Inference features of every batch of ``loader``, L2-normalised when ``normalize``.

    Returns ``(embeddings N x D float32, indices N)``; ``indices`` are the dataset positions of the images
    that were read (an unreadable image skipped under ``on_error="skip"`` is absent).
    """
    was_training = model.training
    model.eval()
    features, indices = [], []
    # a bar only on a terminal: in a log file or CI, carriage-return bars are noise between the plain lines
    show_bar = len(loader) >= 5 and sys.stderr.isatty()
    for batch in tqdm(loader, desc=desc, leave=False, disable=not show_bar):
        if batch is None:
            continue
        images, _, _, index = batch
        out = embed_batch(model, images.to(device, non_blocking=True), flip)
        features.append((l2_normalize(out) if normalize else out).cpu())
        indices.append(index.cpu())
    model.train(was_training)
    report = getattr(loader.dataset, "report_skipped", None)
    if report is not None:
        report()  # warns with the count and paths of the images skipped under on_error="skip"
    if not features:
        raise ValueError("no image could be read: every image of the set was skipped")
    return torch.cat(features).numpy().astype(np.float32, copy=False), torch.cat(indices).numpy()


def embed_samples(
    model: nn.Module,
    samples: SampleList,
    loader: DataLoader,
    device: torch.device | str = "cpu",
    normalize: bool = True,
    flip: bool = False,
) -> Embeddings:
    """Embed a :class:`~centrum.data.SampleList` through ``loader`` and keep its labels, cameras and paths."""
    emb, idx = embed_loader(model, loader, device, normalize, flip=flip)
    return Embeddings(
        embeddings=emb,
        labels=np.asarray(samples.labels)[idx],
        cameras=np.asarray(samples.cameras)[idx],
        paths=[samples.paths[i] for i in idx],
    )


def embed_query_gallery(
    embed: Callable[[SampleList], Embeddings], splits: DatasetSplits
) -> tuple[Embeddings, Embeddings]:
    """Embed the query split, then the gallery split unless it is the same set (the class-disjoint "dml"
    protocol), in which case the query embeddings are returned twice."""
    query = embed(splits.query)
    gallery = query if splits.query_is_gallery else embed(splits.gallery)
    return query, gallery


def protocol_arrays(protocol: str, query: Embeddings, gallery: Embeddings) -> dict[str, np.ndarray]:
    """The named arrays :func:`centrum.evaluation.evaluate_protocol` reads for ``protocol``."""
    if protocol == "dml":
        return {"embeddings": query.embeddings, "labels": query.labels}
    return {
        "query": query.embeddings,
        "gallery": gallery.embeddings,
        "query_labels": query.labels,
        "gallery_labels": gallery.labels,
        "query_cameras": query.cameras,
        "gallery_cameras": gallery.cameras,
    }


def evaluate_embeddings(
    query: Embeddings,
    gallery: Embeddings,
    protocols: Sequence[str],
    metric: str = "cosine",
    recall_ks: Sequence[int] = (),
    distractor_labels: Sequence[int] = (),
) -> dict[str, dict]:
    """Metrics of every protocol in ``protocols`` on already computed query and gallery embeddings.

    ``recall_ks`` overrides the K of Recall@K in the ``dml`` protocol; ``distractor_labels`` are gallery
    labels kept as singletons by the ``reid-centroids`` protocol.
    """
    results = {}
    for p in protocols:
        options: dict = {}
        if p == "dml" and recall_ks:
            options["recall_ks"] = tuple(recall_ks)
        if p == "reid-centroids" and distractor_labels:
            options["distractor_labels"] = tuple(distractor_labels)
        results[p] = evaluate_protocol(p, protocol_arrays(p, query, gallery), metric=metric, **options)
    return results


def evaluate_model(
    model: nn.Module,
    splits: DatasetSplits,
    query_loader: DataLoader,
    gallery_loader: DataLoader | None,
    protocols: Sequence[str] = (),
    device: torch.device | str = "cpu",
    metric: str = "cosine",
    recall_ks: Sequence[int] = (),
    distractor_labels: Sequence[int] = (),
    flip: bool = False,
) -> tuple[dict[str, dict], Embeddings, Embeddings]:
    """Embed the query and gallery splits and compute each protocol's metrics (default: the dataset's own).

    For class-disjoint (``dml``) datasets the query and gallery splits are one set and are embedded once.
    Returns ``(metrics per protocol, query embeddings, gallery embeddings)``.
    """
    protocols = tuple(protocols) or DEFAULT_PROTOCOLS[splits.protocol]
    loaders = {id(splits.query): query_loader, id(splits.gallery): gallery_loader or query_loader}

    def embed(samples: SampleList) -> Embeddings:
        return embed_samples(model, samples, loaders[id(samples)], device, flip=flip)

    if gallery_loader is None and not splits.query_is_gallery:
        raise ValueError("the gallery split differs from the query split: a gallery loader is needed")
    query, gallery = embed_query_gallery(embed, splits)
    return evaluate_embeddings(query, gallery, protocols, metric, recall_ks, distractor_labels), query, gallery
