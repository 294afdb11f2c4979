"""Pictures people would rather look at than numbers: ranked lists, training curves, embedding maps.

Each ``plot_*`` function saves a PNG atomically; each ``*_figure`` function returns the Matplotlib figure.
"""

from centrum.reports.curves import plot_training_curves, training_curves_figure
from centrum.reports.embedding import embedding_map_figure, plot_embedding_map
from centrum.reports.ranked import plot_ranked_lists, plot_search_results, ranked_page_figure

__all__ = [
    "embedding_map_figure",
    "plot_embedding_map",
    "plot_ranked_lists",
    "plot_search_results",
    "plot_training_curves",
    "ranked_page_figure",
    "training_curves_figure",
]
