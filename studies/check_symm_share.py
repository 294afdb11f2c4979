"""Implementation check of Symm's synthetic-negative share on hand-made embeddings (no training, a second).

Run: ``PYTHONPATH=src python studies/check_symm_share.py``. For each pair loss wrapped by Symm, a batch of
32 classes x 2 samples in 128-d, three geometries:

- ``random``: isotropic Gaussian points. Reflection is an isometry, so originals and synthetics are exchangeable
  and about half of the chosen negatives must be synthetic.
- ``clustered``: tight classes spread over the sphere. A synthetic point sits at its class's border, facing the
  other classes, so it is usually the hardest negative (share well above 1/2).
- ``cone``: every point in the positive orthant (what ReLU features give before the embedding layer learns):
  all cosines are about 0.75, a reflection lands at cosine about 2 * 0.75^2 - 0.75 = 0.375 from the others,
  so a synthetic point is never the hardest negative and Symm changes nothing.
"""

from __future__ import annotations

import torch

from centrum.losses import build_loss

LOSSES = {
    "triplet": {"margin": 0.2, "mining": "hard"},
    "npair": {},
    "lifted": {},
    "angular": {},
    "contrastive": {},
}


def main() -> None:
    """Print the synthetic share of every loss on the three geometries."""
    torch.manual_seed(0)
    labels = torch.arange(32).repeat_interleave(2)
    geometries = {
        "random": torch.randn(64, 128),
        "clustered": torch.randn(32, 128).repeat_interleave(2, 0) + 0.3 * torch.randn(64, 128),
        "cone": torch.rand(64, 128),
    }
    print(f"{'loss':12s}" + "".join(f"{g:>11s}" for g in geometries))
    for name, options in LOSSES.items():
        loss = build_loss(name, symm=True, symm_options={}, **options)
        shares = []
        for embeddings in geometries.values():
            loss(embeddings, labels)
            shares.append(loss.synthetic_ratio)
        print(f"{name:12s}" + "".join(f"{s:11.3f}" for s in shares))


if __name__ == "__main__":
    main()
