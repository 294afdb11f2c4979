"""The Lightning data module: a dataset's training split drawn in P x M batches, its query and gallery
splits for evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from centrum.data import DatasetSplits, ImageDataset, PKSampler, SampleList, build_dataset, build_transform
from centrum.data import collate_skip_none as collate
from centrum.data.batch_transforms import BatchAugment
from centrum.data.cache import CACHE_MODES, CachedBatches, ImageCache, build_image_cache


class SeededImages(Dataset):
    """A training dataset read with ``(index, seed)`` items: item ``(i, s)`` is ``dataset[i]`` with its random
    augmentation drawn from a torch generator seeded with ``s``, leaving the global random state untouched.

    With the seeds of :class:`~centrum.data.PKSampler` (``with_seeds=True``), every image's augmentation is a
    function of (seed, epoch, batch, position) alone: the same in a run resumed mid-epoch, in any worker
    process, whatever else consumed random numbers before.
    """

    def __init__(self, dataset: ImageDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: int | tuple[int, int]) -> Any:
        if not isinstance(item, tuple):
            return self.dataset[item]
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class RetrievalDataModule(L.LightningDataModule):
    """Serves a :class:`~centrum.data.DatasetSplits` for training (P x M batches, training augmentation)
    and the query/gallery splits with the test-time transform.

    Under distributed training each process's :class:`~centrum.data.PKSampler` takes disjoint classes.
    Every argument maps one-to-one onto :class:`~centrum.training.config.DataConfig`.

    ``cache="memory"`` or ``"device"`` (:mod:`centrum.data.cache`) decodes the training images once into a uint8
    tensor in host memory or on the training device; its batches are augmented as a whole on the training device
    by :meth:`on_after_batch_transfer`, with each image's parameters drawn from its seed as the per-image path
    draws them. Evaluation batches are unaffected.
    """

    def __init__(
        self,
        dataset: str = "fashion-mnist",
        root: str | Path | None = None,
        options: dict[str, Any] | None = None,
        recipe: str = "reid",
        image_size: tuple[int, int] = (256, 128),
        transform_options: dict[str, Any] | None = None,
        p: int = 16,
        m: int = 4,
        test_batch_size: int = 128,
        num_workers: int = 2,
        on_error: str = "raise",
        seed: int = 0,
        splits: DatasetSplits | None = None,
        cache: str = "none",
    ) -> None:
        super().__init__()
        if cache not in CACHE_MODES:
            raise ValueError(f"data.cache must be one of {CACHE_MODES}, got {cache!r}")
        self.cache = cache
        self._image_cache: ImageCache | None = None
        self._cached: CachedBatches | None = None
        self.dataset_name = dataset
        self.root = root
        self.options = dict(options or {})
        self.recipe = recipe
        self.image_size = tuple(image_size)
        self.transform_options = dict(transform_options or {})
        self.p, self.m = p, m
        self.test_batch_size = test_batch_size
        self.num_workers = num_workers
        self.on_error = on_error
        self.seed = seed
        self._splits = splits
        self._datasets: list[ImageDataset] = []  # every dataset handed out, for the skipped-image report
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches done) for the next training loader
        self.train_sampler: PKSampler | None = None

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Start the next training loader at batch ``batches_done`` of ``epoch`` (an interrupted run's position)."""
        self._resume_at = (int(epoch), int(batches_done))
        if self.train_sampler is not None:
            self.train_sampler.resume_at(epoch, batches_done)

    @property
    def splits(self) -> DatasetSplits:
        """The dataset's train/query/gallery splits, read on first use (no download, ever)."""
        if self._splits is None:
            self._splits = build_dataset(self.dataset_name, self.root, **self.options)
        return self._splits

    @property
    def num_classes(self) -> int:
        """Number of training classes (the classifier's width)."""
        return self.splits.num_train_classes

    def train_transform(self) -> Any:
        """The recipe's training augmentation."""
        return build_transform(self.recipe, train=True, size=self.image_size, **self.transform_options)

    def test_transform(self) -> Any:
        """The recipe's test-time transform."""
        return build_transform(self.recipe, train=False, size=self.image_size, **self.transform_options)

    def train_dataloader(self) -> DataLoader:
        """P x M batches of the training split; each rank gets disjoint classes under DDP."""
        rank, world = 0, 1
        if self.trainer is not None:
            rank, world = self.trainer.global_rank, self.trainer.world_size
        train = self.splits.train
        sampler = PKSampler(
            train.labels, p=self.p, m=self.m, seed=self.seed, num_replicas=world, rank=rank, with_seeds=True
        )
        if self._resume_at is not None:
            sampler.resume_at(*self._resume_at)
        self.train_sampler = sampler
        if self.cache != "none":
            return self._cached_batches().loader(sampler)
        return DataLoader(
            SeededImages(self._track(ImageDataset(train, self.train_transform(), on_error=self.on_error))),
            batch_sampler=sampler,
            # the loader's own generator: creating its iterator must not move the global random state
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def _training_device(self) -> torch.device:
        if self.trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cpu")

    def _cached_batches(self) -> CachedBatches:
        """The training images decoded once (on the first call) and served from host memory or the device."""
        device = self._training_device()
        augment = BatchAugment(self.train_transform())
        if self._image_cache is None:
            train = self.splits.train
            dataset = self._track(ImageDataset(train, on_error=self.on_error))
            self._image_cache = build_image_cache(
                train, augment, self.cache, device, self.on_error, self.num_workers, dataset=dataset
            )
        if self.cache == "device" and self._image_cache.images.device != device:
            self._image_cache = self._image_cache.to(device)
        self._cached = CachedBatches(self._image_cache, augment, self.splits.train)
        return self._cached

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A cached training batch, now on the training device, augmented there as a whole into the
        ``(images, labels, cameras, index)`` of the per-image path; other batches unchanged."""
        if self._cached is not None:
            return self._cached.augment(batch)
        return batch

    def eval_dataloader(self, samples: SampleList) -> DataLoader:
        """Batches of ``samples`` in order, with the test-time transform."""
        return DataLoader(
            self._track(ImageDataset(samples, self.test_transform(), on_error=self.on_error)),
            batch_size=self.test_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate,
        )

    def _track(self, dataset: ImageDataset) -> ImageDataset:
        self._datasets.append(dataset)
        return dataset

    def skipped_paths(self) -> list[str]:
        """Paths of the unreadable images skipped so far (``on_error="skip"``), each once, sorted."""
        return sorted({path for dataset in self._datasets for path in dataset.skipped_paths})
