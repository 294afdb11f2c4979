"""Symmetrical Synthesis (kept for compatibility; it lives in :mod:`centrum.losses.synthesis`)."""

from centrum.losses.synthesis import SymmetricalSynthesis

__all__ = ["SymmetricalSynthesis"]
