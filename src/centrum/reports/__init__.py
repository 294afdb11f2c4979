"""Pictures people would rather look at than numbers: ranked lists, training curves, embedding maps."""

from centrum.reports.plots import plot_embedding_map, plot_ranked_lists, plot_training_curves

__all__ = ["plot_embedding_map", "plot_ranked_lists", "plot_training_curves"]
