"""Inference at scale: embedding large image collections in shards, on one machine or on Ray."""
