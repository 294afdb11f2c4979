"""The materialised Symmetrical Synthesis: the implementation that built every synthetic point and multiplied
the anchors against the whole bank (originals + synthetics), kept as the reference that the Gram-matrix
implementation (:class:`centrum.losses.SymmetricalSynthesis`) must equal, and as the "old" column of
``benchmarks/losses.py``. Changed only to the current loss contract (``Negatives.inner``, ``metric``)."""

from __future__ import annotations

import math
from itertools import combinations, permutations
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from centrum.losses import AngularLoss, NPairLoss, PairLoss
from centrum.losses import functional as LF
from centrum.losses.base import check_pair_batch
from centrum.losses.mining import topk_hardest

__all__ = ["MaterialisedSymm"]


class MaterialisedSymm(nn.Module):
    """Wrap a pair-based loss so that its negatives are mined among original and synthetic points.

    For every ordered pair ``(k, l)`` of distinct same-class samples, ``x_k`` is reflected about the axis
    ``x_l`` (:func:`~centrum.losses.functional.symmetric_reflection` with ``alpha``, ``beta``), in the space
    the base loss works in (after its L2 normalisation, if any). Positives stay original.

    ``candidates="anchor"`` (default): for each anchor and each other class, the ``top_k`` hardest (nearest,
    or most similar) of that class's originals and synthetics become the anchor's negatives.
    ``candidates="pair"``: for each pair of classes ``(i, j)``, the ``top_k`` hardest of all cross pairs
    between class i's points and class j's points (4 x 4 = 16 with two samples per class); their
    distances (or similarities) are the negatives of every anchor of class i. The angular loss, whose
    negative term needs a point, uses the class-j point of each chosen pair.

    ``variant="official"`` (N-pair and angular only) reproduces the authors' TensorFlow code: with one
    (anchor, positive) pair per class and its two synthetic points, the logit matrix is the element-wise
    maximum of the similarity matrices of the 6 (N-pair: unordered) or 12 (angular: ordered) combinations of
    the sets {anchor, positive, synthetic-1, synthetic-2}, diagonal included.

    After each call, ``synthetic_ratio`` holds the share of chosen negatives that were synthetic (a pair
    counts as synthetic when either of its points is) and ``last_stats`` a few counts.
    """

    def __init__(
        self,
        base_loss: PairLoss,
        candidates: str = "anchor",
        top_k: int = 1,
        alpha: float = 2.0,
        beta: float = 1.0,
        detach: bool = False,
        variant: str = "paper",
    ) -> None:
        super().__init__()
        if not isinstance(base_loss, PairLoss):
            raise ValueError(
                "SymmetricalSynthesis wraps a pair-based loss (ContrastiveLoss, TripletMarginLoss, NPairLoss, "
                f"LiftedStructureLoss, AngularLoss), got {type(base_loss).__name__}"
            )
        if candidates not in ("anchor", "pair"):
            raise ValueError(f"unknown candidates {candidates!r}; choose 'anchor' or 'pair'")
        if int(top_k) != top_k or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k}")
        if variant not in ("paper", "official"):
            raise ValueError(f"unknown variant {variant!r}; choose 'paper' or 'official'")
        if variant == "official" and not isinstance(base_loss, (NPairLoss, AngularLoss)):
            raise ValueError(
                f"variant='official' exists only for NPairLoss and AngularLoss, got {type(base_loss).__name__}"
            )
        self.base_loss = base_loss
        self.candidates, self.top_k = candidates, int(top_k)
        self.alpha, self.beta, self.detach, self.variant = float(alpha), float(beta), bool(detach), variant
        self.synthetic_ratio: float = 0.0
        self.last_stats: dict[str, Any] = {}

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The base loss of the batch with Symm's negatives; a scalar tensor."""
        e, lab = check_pair_batch(embeddings, labels)
        _, inverse, counts = torch.unique(lab, return_inverse=True, return_counts=True)
        if int(counts.max()) < 2:
            raise ValueError(
                f"no class in labels has two samples (all {lab.shape[0]} labels are distinct); Symmetrical "
                "Synthesis needs same-class pairs: sample batches as P classes x M >= 2 samples"
            )
        x = self.base_loss.prepare(e)
        if self.variant == "official":
            return self._official(x, lab)
        return self._paper(x, lab, inverse, counts.shape[0])

    def _paper(self, x: torch.Tensor, lab: torch.Tensor, inverse: torch.Tensor, C: int) -> torch.Tensor:
        base, k, N = self.base_loss, self.top_k, x.shape[0]
        synth, source, _ = LF.synthesize_pairs(x, lab, self.alpha, self.beta)
        if self.detach:
            synth = synth.detach()
        bank = torch.cat([x, synth])
        bank_cls = torch.cat([inverse, inverse[source]])
        is_synth = torch.cat([torch.zeros(N, dtype=torch.bool), torch.ones(synth.shape[0], dtype=torch.bool)]).to(
            x.device
        )
        full = base.matrix(x, bank)  # anchors x bank; the first N columns are the originals
        sign = -1.0 if base.metric.similarity else 1.0  # mining keys: smaller = harder
        if self.candidates == "anchor":
            neg_mask = inverse.unsqueeze(1) != bank_cls.unsqueeze(0)
            keys, index, valid = topk_hardest(sign * full, neg_mask, k, groups=bank_cls, num_groups=C)
            keys, index, valid = keys.flatten(1), index.flatten(1), valid.flatten(1)
            synthetic = is_synth[index]
        else:
            K = bank.shape[0]
            bank_keys = sign * base.matrix(bank, bank)
            cross = bank_cls.unsqueeze(1) != bank_cls.unsqueeze(0)
            # per point u and class j: the k hardest partners v of class j
            k1, v1, ok1 = topk_hardest(bank_keys, cross, k, groups=bank_cls, num_groups=C)  # K x C x k
            # per class j and class i: the k hardest of those over the points u of class i
            per_j = k1.permute(1, 0, 2).reshape(C, K * k)
            ok_j = ok1.permute(1, 0, 2).reshape(C, K * k)
            k2, col, ok2 = topk_hardest(per_j, ok_j, k, groups=bank_cls.repeat_interleave(k), num_groups=C)
            u, slot = col // k, col % k  # C_j x C_i x k
            v = v1.permute(1, 0, 2)[torch.arange(C, device=x.device).view(C, 1, 1), u, slot]
            pair_keys, pair_v, pair_ok = k2.transpose(0, 1), v.transpose(0, 1), ok2.transpose(0, 1)  # C_i x C_j x k
            pair_synth = (is_synth[u] | is_synth[v]).transpose(0, 1)
            keys, index = pair_keys[inverse].flatten(1), pair_v[inverse].flatten(1)
            valid, synthetic = pair_ok[inverse].flatten(1), pair_synth[inverse].flatten(1)
        negatives = LF.Negatives(sign * keys, valid, index, x @ bank.T, synthetic)
        loss = base.loss_from_negatives(x, full[:, :N], lab, negatives)
        with torch.no_grad():
            chosen = valid & base.anchor_rows(lab).unsqueeze(1)
            n_chosen = int(chosen.sum())
            n_synth = int((synthetic & chosen).sum())
        self._record(n_synth, n_chosen, synth.shape[0], bank.shape[0])
        return loss

    def _official(self, x: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        a, p = LF.first_pairs(lab)
        A, P = x[a], x[p]
        S1 = LF.symmetric_reflection(A, P, self.alpha, self.beta)
        S2 = LF.symmetric_reflection(P, A, self.alpha, self.beta)
        if self.detach:
            S1, S2 = S1.detach(), S2.detach()
        sets = [A, P, S1, S2]
        n = A.shape[0]
        eye = torch.eye(n, dtype=torch.bool, device=x.device)
        if isinstance(self.base_loss, NPairLoss):
            combos = list(combinations(range(4), 2))
            logits = torch.stack([sets[i] @ sets[j].T for i, j in combos])
        else:
            t2 = math.tan(math.radians(self.base_loss.alpha)) ** 2
            combos = list(permutations(range(4), 2))
            stacked = []
            for i, j in combos:  # 12 fixed combinations, not a loop over the batch
                X, Y = sets[i], sets[j]
                off = 4 * t2 * (X + Y) @ Y.T
                diag = 2 * (1 + t2) * (X * Y).sum(1)
                stacked.append(torch.where(eye, torch.diag_embed(diag), off))
            logits = torch.stack(stacked)
        best, which = logits.max(dim=0)
        loss = F.cross_entropy(best, torch.arange(n, device=x.device))
        if isinstance(self.base_loss, NPairLoss):
            loss = loss + 0.25 * self.base_loss.l2_reg * ((A**2).sum(1).mean() + (P**2).sum(1).mean())
        with torch.no_grad():
            involves_synth = torch.tensor([i >= 2 or j >= 2 for i, j in combos], device=x.device)
            off_diag = ~eye
            n_chosen = int(off_diag.sum())
            n_synth = int((involves_synth[which] & off_diag).sum())
        self._record(n_synth, n_chosen, 2 * n, 4 * n)
        return loss

    def _record(self, n_synth: int, n_chosen: int, n_synthetic_points: int, n_candidates: int) -> None:
        self.synthetic_ratio = n_synth / n_chosen if n_chosen else 0.0
        self.last_stats = {
            "synthetic_ratio": self.synthetic_ratio,
            "num_chosen_negatives": n_chosen,
            "num_synthetic_negatives": n_synth,
            "num_synthetic_points": n_synthetic_points,
            "num_candidates": n_candidates,
        }

    def extra_repr(self) -> str:
        return (
            f"candidates={self.candidates!r}, top_k={self.top_k}, alpha={self.alpha}, beta={self.beta}, "
            f"detach={self.detach}, variant={self.variant!r}"
        )
