"""The pictures' old import path: ``centrum.reports.plots`` re-exports the functions of the focused modules
(:mod:`~centrum.reports.curves`, :mod:`~centrum.reports.ranked`, :mod:`~centrum.reports.embedding`)."""

from centrum.reports.curves import plot_training_curves, training_curves_figure
from centrum.reports.embedding import embedding_map_figure, plot_embedding_map
from centrum.reports.ranked import plot_ranked_lists, plot_search_results

__all__ = [
    "embedding_map_figure",
    "plot_embedding_map",
    "plot_ranked_lists",
    "plot_search_results",
    "plot_training_curves",
    "training_curves_figure",
]
