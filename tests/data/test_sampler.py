"""PKSampler: batch shape, per-epoch coverage, determinism, disjoint classes across ranks."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from centrum.data import PKSampler


def uneven_labels(seed: int = 0) -> np.ndarray:
    """40 classes with 1 to 12 images each (some below M), shuffled, non-contiguous ids."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 13, size=40)
    labels = np.repeat(np.arange(40) * 3 + 5, sizes)
    return rng.permutation(labels)


@pytest.mark.parametrize(("p", "m"), [(4, 4), (8, 2), (5, 3)])
def test_every_batch_has_p_classes_of_m_images(p: int, m: int) -> None:
    labels = uneven_labels()
    sampler = PKSampler(labels, p=p, m=m, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        assert len(batch) == p * m
        counts = Counter(labels[batch].tolist())
        assert len(counts) == p and set(counts.values()) == {m}
        # the M images of a class are contiguous in the batch
        assert all(len(set(labels[batch[k * m : (k + 1) * m]].tolist())) == 1 for k in range(p))


def test_every_image_seen_about_once_per_epoch() -> None:
    labels = uneven_labels()
    p, m = 4, 4
    sampler = PKSampler(labels, p=p, m=m, seed=3)
    expected_chunks = sum(-(-c // m) for c in np.bincount(labels)[np.unique(labels)])
    assert len(sampler) == -(-expected_chunks // p)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        seen = Counter(i for batch in sampler for i in batch)
        assert set(seen) == set(range(len(labels)))  # full coverage
        # duplicates only from completing a class's last chunk and from the final fill-up batch
        assert sum(seen.values()) == len(sampler) * p * m
        assert sum(seen.values()) - len(labels) < len(np.unique(labels)) * m + p * m


def test_small_classes_are_sampled_with_replacement() -> None:
    labels = np.array([0, 1, 1, 2, 2, 2, 3, 3, 3, 3])
    sampler = PKSampler(labels, p=2, m=4, seed=0)
    for batch in sampler:
        for k in range(2):
            chunk = batch[k * 4 : (k + 1) * 4]
            label = labels[chunk[0]]
            assert set(chunk) == set(np.flatnonzero(labels == label).tolist())  # all of the class, repeated


def test_deterministic_under_seed_and_epoch() -> None:
    labels = uneven_labels()
    a = PKSampler(labels, p=4, m=2, seed=7)
    b = PKSampler(labels, p=4, m=2, seed=7)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    c = PKSampler(labels, p=4, m=2, seed=8)
    c.set_epoch(2)
    assert list(c) != list(b)
    a.set_epoch(3)
    assert list(a) != list(b.batches(2))
    # without set_epoch each pass moves on to the next epoch, reproducibly
    d, e = PKSampler(labels, p=4, m=2, seed=7), PKSampler(labels, p=4, m=2, seed=7)
    first, second = list(d), list(d)
    assert first != second and first == e.batches(0) and second == e.batches(1)


def test_two_ranks_get_disjoint_classes_and_equal_lengths() -> None:
    labels = uneven_labels(1)
    p, m = 4, 2
    ranks = [PKSampler(labels, p=p, m=m, seed=5, num_replicas=2, rank=r) for r in range(2)]
    for epoch in range(3):
        classes = []
        for sampler in ranks:
            sampler.set_epoch(epoch)
            batches = list(sampler)
            assert len(batches) == len(sampler) == len(ranks[0])
            classes.append({int(labels[i]) for batch in batches for i in batch})
        assert not classes[0] & classes[1]
        seen = classes[0] | classes[1]
        assert len(seen) >= len(np.unique(labels)) - 2  # nearly every class is used across the two ranks
    assert len(ranks[0]) == -(-sum(-(-c // m) for c in np.bincount(labels) if c) // (p * 2))


def test_accepts_tensor_labels_and_rejects_bad_arguments() -> None:
    assert len(PKSampler(torch.tensor([0, 0, 1, 1]), p=2, m=2)) == 1
    with pytest.raises(ValueError, match="need at least p \\* num_replicas = 6"):
        PKSampler([0, 1, 2, 3], p=3, m=2, num_replicas=2)
    with pytest.raises(ValueError, match="rank must be in"):
        PKSampler([0, 1, 2, 3], p=2, m=2, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="integers"):
        PKSampler([0.5, 1.0], p=1, m=2)
    with pytest.raises(ValueError, match="m=0"):
        PKSampler([0, 1], p=1, m=0)


def test_works_as_dataloader_batch_sampler() -> None:
    labels = np.repeat(np.arange(6), 3)
    dataset = torch.utils.data.TensorDataset(torch.arange(len(labels)), torch.from_numpy(labels))
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=PKSampler(labels, p=3, m=2))
    batches = list(loader)
    assert len(batches) == len(loader) == 4  # 6 classes x ceil(3 / 2) chunks / p = 3
    assert all(len(torch.unique(y)) == 3 for _, y in batches)


def test_resume_at_continues_with_the_next_batch_of_the_epoch() -> None:
    labels = uneven_labels()
    whole = PKSampler(labels, p=4, m=2, seed=3)
    whole.set_epoch(2)
    epoch_two = list(whole)
    resumed = PKSampler(labels, p=4, m=2, seed=3)
    resumed.resume_at(2, 5)
    resumed.set_epoch(2)  # Lightning sets the epoch again before iterating: the position stays
    assert list(resumed) == epoch_two[5:]
    resumed.set_epoch(3)  # the next epoch starts at its first batch
    assert list(resumed) == resumed.batches(3)
    with pytest.raises(ValueError, match="cannot resume at epoch 0, batch 999"):
        resumed.resume_at(0, 999)


def test_per_image_seeds_depend_only_on_the_position() -> None:
    labels = uneven_labels()
    seeded = PKSampler(labels, p=4, m=2, seed=3, with_seeds=True)
    seeded.set_epoch(1)
    batches = list(seeded)
    assert [[i for i, _ in b] for b in batches] == PKSampler(labels, p=4, m=2, seed=3).batches(1)
    seeds = [s for b in batches for _, s in b]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**63 for s in seeds)
    again = PKSampler(labels, p=4, m=2, seed=3, with_seeds=True)
    again.resume_at(1, 2)
    assert list(again) == batches[2:]  # a resumed run draws the very same augmentation seeds
    other_epoch = PKSampler(labels, p=4, m=2, seed=3, with_seeds=True)
    other_epoch.set_epoch(2)
    assert not set(seeds) & {s for b in other_epoch for _, s in b}
