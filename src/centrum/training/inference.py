"""Moved to :mod:`centrum.inference` (no Lightning); re-exported here for existing imports."""

from centrum.inference.embeddings import (  # noqa: F401
    DEFAULT_PROTOCOLS,
    Embeddings,
    embed_loader,
    embed_query_gallery,
    embed_samples,
    evaluate_embeddings,
    evaluate_model,
    protocol_arrays,
)
