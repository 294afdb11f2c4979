"""Search as a service: ``centrum serve`` (FastAPI app, durable index store, micro-batched embedding).

The model side is :mod:`centrum.inference` (:class:`~centrum.inference.Embedder`,
:func:`~centrum.inference.load_embedder`); this package only serves it.
"""
