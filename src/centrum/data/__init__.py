"""Datasets as published, the P x M batch sampler and the augmentation recipes, without torchvision.

- :func:`build_dataset` reads Market-1501, DukeMTMC-reID, DeepFashion In-shop and Consumer-to-shop,
  Street2Shop, CUB-200-2011, CARS196, Stanford Online Products, Omniglot, Fashion-MNIST, or your own
  data (CSV or folder per class) into :class:`DatasetSplits` of :class:`SampleList` objects; it never
  downloads anything.
- :class:`ImageDataset` decodes and transforms images, failing on or skipping unreadable ones.
- :class:`PKSampler` yields batches of P classes x M images.
- :func:`build_transform` gives the "reid" (strong baseline / CTL) and "dml" (Symmetrical Synthesis)
  training and test transforms; :class:`BatchAugment` applies a training transform to a whole batch on its
  device, and :func:`build_image_cache` decodes a training split once (``data.cache``).
"""

from ._layout import IMAGE_SUFFIXES
from .batch_transforms import BatchAugment
from .cache import CACHE_MODES, ImageCache, build_image_cache
from .custom import read_csv, read_folder
from .dataset import ImageDataset, collate_skip_none, find_unreadable
from .dml import read_cars196, read_cub200, read_omniglot, read_sop
from .fashion import (
    FASHION_MNIST_ROOT,
    read_deepfashion_c2s,
    read_deepfashion_inshop,
    read_fashion_mnist,
    read_idx,
    read_street2shop,
)
from .registry import DATASETS, build_dataset
from .reid import read_dukemtmc, read_market1501
from .sampler import PKSampler
from .samples import DatasetSplits, Sample, SampleList, UnreadableImageError
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DmlTestTransform,
    DmlTrainTransform,
    ReidTestTransform,
    ReidTrainTransform,
    build_transform,
    random_erase,
)

__all__ = [
    "CACHE_MODES",
    "DATASETS",
    "FASHION_MNIST_ROOT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SUFFIXES",
    "BatchAugment",
    "DatasetSplits",
    "DmlTestTransform",
    "DmlTrainTransform",
    "ImageCache",
    "ImageDataset",
    "PKSampler",
    "ReidTestTransform",
    "ReidTrainTransform",
    "Sample",
    "SampleList",
    "UnreadableImageError",
    "build_dataset",
    "build_image_cache",
    "build_transform",
    "collate_skip_none",
    "find_unreadable",
    "random_erase",
    "read_cars196",
    "read_csv",
    "read_cub200",
    "read_deepfashion_c2s",
    "read_deepfashion_inshop",
    "read_dukemtmc",
    "read_fashion_mnist",
    "read_folder",
    "read_idx",
    "read_market1501",
    "read_omniglot",
    "read_sop",
    "read_street2shop",
]
