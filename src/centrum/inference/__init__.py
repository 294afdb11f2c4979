"""Embedding images outside Lightning: ONNX Runtime (:mod:`centrum.inference.onnx_runtime`)."""
