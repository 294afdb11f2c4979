"""centrum: image retrieval by deep metric learning.

Packages, one per concern:

- :mod:`centrum.losses`: pair-based losses, Centroid Triplet Loss and Symmetrical Synthesis;
- :mod:`centrum.evaluation`: the published evaluation protocols (re-id, products, metric learning);
- :mod:`centrum.retrieval`: persistent per-image and centroid indices;
- :mod:`centrum.data`: dataset readers, the P x M sampler and the transforms;
- :mod:`centrum.models`: backbones, pooling, BNNeck and pretrained weights;
- :mod:`centrum.training`: the CTL and metric-learning recipes on PyTorch Lightning;
- :mod:`centrum.cli`: the ``centrum`` command line.

:mod:`centrum.distances` and :mod:`centrum.validation` hold the pure functions they share.
"""

__version__ = "0.1.0"
