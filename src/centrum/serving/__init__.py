"""Search as a service: ``centrum serve`` (FastAPI app, durable index store, micro-batched embedding)."""

from centrum.serving.embedder import Embedder, Preprocessing, preprocessing_from_config

__all__ = ["Embedder", "Preprocessing", "preprocessing_from_config"]
