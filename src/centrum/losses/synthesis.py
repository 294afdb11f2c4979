"""Symmetrical Synthesis (Gu & Ko, AAAI 2020) as a plug-in for any pair-based loss, computed from the batch's
Gram matrix.

A synthetic point is a linear combination of two originals, ``x'_kl = c1 x_k + c2_kl x_l`` with
``c1 = beta (1 - alpha)`` and ``c2_kl = beta alpha G[k, l] / G[l, l]`` (:func:`symmetric_reflection`), so its
inner product with any sample ``a`` is ``c1 G[a, k] + c2_kl G[a, l]`` and its squared norm
``c1^2 G[k, k] + 2 c1 c2_kl G[k, l] + c2_kl^2 G[l, l]``, where ``G = x x^T`` is the batch's Gram matrix. Every
candidate distance or similarity (anchor vs synthetic, synthetic vs synthetic) is then
:meth:`~centrum.distances.Metric.from_gram` of gathered entries of ``G``: no synthetic point is built and
there is no second N x D product. The points-based implementation survives as the test reference
(``tests/losses/symm_materialised.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from centrum.distances import l2_normalize
from centrum.losses._masks import Negatives, class_index, first_pairs, ordered_positive_pairs
from centrum.losses.base import PairLoss, ReportsStats, check_pair_batch
from centrum.losses.mining import topk_hardest

__all__ = ["SymmetricalSynthesis", "symmetric_reflection", "synthesize_pairs"]

# the public contract of a pair-based loss (see PairLoss) that Symmetrical Synthesis uses
_CONTRACT = ("prepare", "metric", "loss_from_negatives", "anchor_rows", "uses_nearest_negative_only")
# squared norm below which a reflection axis counts as zero (l2_normalize's eps = 1e-12, squared)
_AXIS_EPS = 1e-24


def symmetric_reflection(x: torch.Tensor, axis: torch.Tensor, alpha: float = 2.0, beta: float = 1.0) -> torch.Tensor:
    """Symmetrical Synthesis of ``x`` about the line through the origin along ``axis`` (Gu & Ko 2020).

    ``x' = beta * (x + alpha * (r - x))`` with ``r = (x . u) u`` the projection of ``x`` on
    ``u = axis / ||axis||``. ``alpha = 2, beta = 1`` is the reflection ``2 (x . u) u - x``: it preserves the
    norm of ``x``, its distance to ``axis`` and its cosine to ``axis``. Rows of ``x`` and ``axis`` are
    paired (same shape ... x D); computed in float32.
    """
    if x.shape != axis.shape:
        raise ValueError(f"x has shape {tuple(x.shape)} but axis has shape {tuple(axis.shape)}; they must match")
    x = x.float()
    u = l2_normalize(axis)
    r = (x * u).sum(-1, keepdim=True) * u
    return beta * (x + alpha * (r - x))


def synthesize_pairs(
    x: torch.Tensor, labels: torch.Tensor, alpha: float = 2.0, beta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic points of a batch: for every ordered pair ``(k, l)`` of distinct same-class samples,
    ``x_k`` reflected about ``x_l``. Returns ``(points, source, axis)`` with the indices ``k`` and ``l``."""
    source, axis = ordered_positive_pairs(labels)
    return symmetric_reflection(x[source], x[axis], alpha, beta), source, axis


class _Layout:
    """What Symm needs of a label vector, computed once per distinct batch labelling (the P x M sampler repeats
    its layout, so a one-entry cache saves a dozen small operations per step): the ordered same-class pairs
    ``(source, axis)`` (synthetic point s is ``x[source[s]]`` reflected about ``x[axis[s]]``), the class of each
    candidate (originals then synthetics), and which candidates share each sample's class."""

    def __init__(self, labels: torch.Tensor) -> None:
        N = labels.shape[0]
        self.N = N
        self.source, self.axis = ordered_positive_pairs(labels)
        self.pair_flat = self.source * N + self.axis  # flat index of G[source, axis]
        bank_labels = torch.cat([labels, labels.index_select(0, self.source)])
        self.same = labels.unsqueeze(1) == bank_labels.unsqueeze(0)  # N x K
        self.size = bank_labels.shape[0]
        self._classes: tuple[torch.Tensor, int, torch.Tensor] | None = None
        self._labels = labels

    def classes(self) -> tuple[torch.Tensor, int, torch.Tensor]:
        """``(inverse, C, bank_classes)``: each sample's class position, the class count, each candidate's."""
        if self._classes is None:
            _, inverse, counts = class_index(self._labels)
            self._classes = inverse, counts.shape[0], torch.cat([inverse, inverse.index_select(0, self.source)])
        return self._classes


class _GramBank:
    """The candidates of Symm, originals then synthetics, read off the Gram matrix: their squared norms, the
    inner products of every sample with every candidate, and (for the per-pair mode) of any two candidates.

    Candidate ``b`` is ``c1[b] x[i1[b]] + c2[b] x[i2[b]]``. With ``detach`` the synthetic points carry no
    gradient: their coefficients come from the detached Gram, and an inner product of an original with a
    synthetic point takes its gradient through the original only (``R = x sg(x)^T``, one more N x N product,
    in that mode only).
    """

    def __init__(self, x: torch.Tensor, G: torch.Tensor, layout: _Layout, alpha: float, beta: float, detach: bool):
        self.N, self.G, self.detach, self.layout = layout.N, G, detach, layout
        Gc = G.detach() if detach else G  # for the synthetic points' coefficients and norms
        sq_c = Gc.diagonal()
        g_kl = Gc.reshape(-1).index_select(0, layout.pair_flat)
        g_kk, g_ll = sq_c.index_select(0, layout.source), sq_c.index_select(0, layout.axis)
        self.a1 = beta * (1.0 - alpha)
        self.a2 = g_kl / g_ll.clamp_min(_AXIS_EPS) * (beta * alpha)
        # |a1 x_k + a2 x_l|^2 = a1^2 g_kk + a2 (2 a1 g_kl + a2 g_ll)
        synth_sq = torch.add(g_ll * self.a2, g_kl, alpha=2.0 * self.a1).mul_(self.a2)
        synth_sq = synth_sq.add_(g_kk, alpha=self.a1 * self.a1) if self.a1 != 0.0 else synth_sq
        self.sq = torch.cat([G.diagonal(), synth_sq])  # K squared norms
        self.R = x @ x.detach().T if detach else G  # row-side gradient only, in detach mode

    @property
    def size(self) -> int:
        return self.layout.size

    def sample_inner(self) -> torch.Tensor:
        """N x K inner products of every batch sample with every candidate."""
        R, lay = self.R, self.layout
        synth = torch.addcmul(R.index_select(1, lay.source) * self.a1, R.index_select(1, lay.axis), self.a2)
        return torch.cat([self.G, synth], dim=1)

    def inner(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Inner products of candidates ``u`` and ``v`` (index tensors of one broadcast shape)."""
        N, lay = self.N, self.layout
        arange = torch.arange(N, device=u.device)
        i1, i2 = torch.cat([arange, lay.source]), torch.cat([arange, lay.axis])
        ones = torch.ones(N, dtype=self.a2.dtype, device=u.device)
        c1, c2 = torch.cat([ones, torch.full_like(self.a2, self.a1)]), torch.cat([torch.zeros_like(ones), self.a2])
        i1u, i2u, c1u, c2u = i1[u], i2[u], c1[u], c2[u]
        i1v, i2v, c1v, c2v = i1[v], i2[v], c1[v], c2[v]
        if self.detach and torch.is_grad_enabled():
            u_orig, v_orig = u < N, v < N
            G, R, Gd = self.G, self.R, self.G.detach()

            def gram(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
                return torch.where(
                    u_orig & v_orig, G[p, q], torch.where(u_orig, R[p, q], torch.where(v_orig, R[q, p], Gd[p, q]))
                )
        else:
            G = self.G

            def gram(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
                return G[p, q]

        first = c1u * c1v * gram(i1u, i1v) + c1u * c2v * gram(i1u, i2v)
        return first + c2u * c1v * gram(i2u, i1v) + c2u * c2v * gram(i2u, i2v)


class SymmetricalSynthesis(ReportsStats, nn.Module):
    """Wrap a pair-based loss so that its negatives are mined among original and synthetic points.

    For every ordered pair ``(k, l)`` of distinct same-class samples, ``x_k`` is reflected about the axis
    ``x_l`` (:func:`symmetric_reflection` with ``alpha``, ``beta``), in the space the base loss works in (after
    its L2 normalisation, if any). Positives stay original. Every candidate value comes from the batch's Gram
    matrix (see the module docstring); the synthetic points are never built.

    ``candidates="anchor"`` (default): for each anchor and each other class, the ``top_k`` hardest (closest in
    the base loss's metric) of that class's originals and synthetics become the anchor's negatives. When the
    base loss uses each anchor's closest negative only (batch-hard triplet) and ``top_k=1``, the hardest of all
    other-class candidates is taken directly, without grouping by class (the same loss).
    ``candidates="pair"``: for each pair of classes ``(i, j)``, the ``top_k`` hardest of all cross pairs
    between class i's points and class j's points (4 x 4 = 16 with two samples per class); their values are
    the negatives of every anchor of class i. The angular loss, whose negative term needs a point, uses the
    class-j point of each chosen pair (through its inner products).

    ``variant="official"`` (losses with :attr:`~centrum.losses.PairLoss.official_combinations`: N-pair and
    angular) reproduces the authors' TensorFlow code: with one (anchor, positive) pair per class and its two
    synthetic points, the logit matrix is the element-wise maximum of the logit matrices of the 6 (N-pair:
    unordered) or 12 (angular: ordered) combinations of the sets {anchor, positive, synthetic-1,
    synthetic-2}, diagonal included.

    Uses only the base loss's public contract (:class:`~centrum.losses.PairLoss`). After each call,
    ``last_stats`` holds ``synthetic_ratio`` (the share of chosen negatives that were synthetic; a pair counts
    as synthetic when either of its points is; on the batch-hard shortcut, the share of anchors whose hardest
    negative is synthetic) and counts; :attr:`synthetic_ratio` reads it.
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
        if not isinstance(base_loss, nn.Module) or not all(hasattr(base_loss, name) for name in _CONTRACT):
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
        if variant == "official" and not getattr(base_loss, "official_combinations", ()):
            raise ValueError(
                f"variant='official' exists only for NPairLoss and AngularLoss, got {type(base_loss).__name__}"
            )
        self.base_loss = base_loss
        self.candidates, self.top_k = candidates, int(top_k)
        self.alpha, self.beta, self.detach, self.variant = float(alpha), float(beta), bool(detach), variant

    @property
    def synthetic_ratio(self) -> float:
        """Share of the last call's chosen negatives that were synthetic (0 before the first call)."""
        return self.last_stats.get("synthetic_ratio", 0.0)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The base loss of the batch with Symm's negatives; a scalar tensor."""
        e, lab = check_pair_batch(embeddings, labels)
        layout = self._layout_for(lab)
        if layout.source.numel() == 0:
            raise ValueError(
                f"no class in labels has two samples (all {lab.shape[0]} labels are distinct); Symmetrical "
                "Synthesis needs same-class pairs: sample batches as P classes x M >= 2 samples"
            )
        x = self.base_loss.prepare(e)
        G = x @ x.T
        if self.variant == "official":
            return self._official(x, G, lab)
        return self._paper(x, G, lab, layout)

    def _layout_for(self, labels: torch.Tensor) -> _Layout:
        """The cached :class:`_Layout` of ``labels`` (recomputed when the labelling changes)."""
        key = (labels.device, labels.shape[0], labels.cpu().numpy().tobytes())
        if getattr(self, "_layout_key", None) != key:
            self._layout_key, self._layout = key, _Layout(labels)
        return self._layout

    def _paper(self, x: torch.Tensor, G: torch.Tensor, lab: torch.Tensor, layout: _Layout) -> torch.Tensor:
        base, metric, k, N = self.base_loss, self.base_loss.metric, self.top_k, x.shape[0]
        bank = _GramBank(x, G, layout, self.alpha, self.beta, self.detach)
        inner = bank.sample_inner()  # N x K, with gradient
        sq = bank.sq[:N].unsqueeze(1)
        mat = metric.from_gram(G, sq, sq.T)
        if self.candidates == "anchor":
            # mine on keys that order each row like the metric (no gradient), then score the chosen candidates
            with torch.no_grad():
                keys = metric.ranking_keys(inner.detach(), bank.sq.detach().unsqueeze(0))
                keys.masked_fill_(layout.same, float("inf"))
                if k == 1 and base.uses_nearest_negative_only:  # the hardest of all other-class candidates
                    best, index = keys.min(1, keepdim=True)
                    valid = best < float("inf")
                else:
                    _, C, bank_classes = layout.classes()
                    _, index, valid = topk_hardest(keys, ~layout.same, k, groups=bank_classes, num_groups=C)
                    index, valid = index.flatten(1), valid.flatten(1)
            values = metric.from_gram(inner.gather(1, index), sq, bank.sq[index])
            synthetic = index >= N
        else:
            values, index, valid, synthetic = self._pair_candidates(bank, layout)
        negatives = Negatives(values, valid, index, inner, synthetic)
        loss = base.loss_from_negatives(x, mat, lab, negatives)
        anchor_rows = base.anchor_rows
        self.record_stats_lazily(
            lambda: self._statistics(valid & anchor_rows(lab).unsqueeze(1), synthetic, bank.size - N, bank.size)
        )
        return loss

    def _pair_candidates(self, bank: _GramBank, layout: _Layout):
        """Per anchor and other class j: the ``top_k`` hardest cross pairs (u of the anchor's class, v of class
        j), mined on the candidates' values without gradient and recomputed with it for the chosen pairs."""
        metric, k, K = self.base_loss.metric, self.top_k, bank.size
        inverse, C, bank_cls = layout.classes()
        with torch.no_grad():
            every = torch.arange(K, device=bank_cls.device)
            # values (not row-relative keys): the second stage compares pairs across points u
            pair_values = metric.from_gram(
                bank.inner(every.unsqueeze(1), every.unsqueeze(0)), bank.sq.unsqueeze(1), bank.sq.unsqueeze(0)
            )
            cross = bank_cls.unsqueeze(1) != bank_cls.unsqueeze(0)
            # per point u and class j: the k hardest partners v of class j
            k1, v1, ok1 = topk_hardest(pair_values, cross, k, bank_cls, C, largest=metric.similarity)  # K x C x k
            # per class j and class i: the k hardest of those over the points u of class i
            per_j = k1.permute(1, 0, 2).reshape(C, K * k)
            ok_j = ok1.permute(1, 0, 2).reshape(C, K * k)
            _, col, ok2 = topk_hardest(per_j, ok_j, k, bank_cls.repeat_interleave(k), C, largest=metric.similarity)
            u, slot = col // k, col % k  # C_j x C_i x k
            v = v1.permute(1, 0, 2)[torch.arange(C, device=u.device).view(C, 1, 1), u, slot]
            u, v, ok = u.transpose(0, 1)[inverse], v.transpose(0, 1)[inverse], ok2.transpose(0, 1)[inverse]
        values = metric.from_gram(bank.inner(u, v), bank.sq[u], bank.sq[v]).masked_fill(~ok, 0.0)
        synthetic = (u >= bank.N) | (v >= bank.N)
        return values.flatten(1), v.masked_fill(~ok, 0).flatten(1), ok.flatten(1), synthetic.flatten(1)

    def _official(self, x: torch.Tensor, G: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        base = self.base_loss
        a, p = first_pairs(lab)
        n = a.shape[0]
        ap = torch.cat([a, p])
        Gc = G.detach() if self.detach else G
        g_ap = Gc[a, p]
        c1 = torch.full_like(g_ap, self.beta * (1.0 - self.alpha))
        s1 = (self.beta * self.alpha) * g_ap / Gc[p, p].clamp_min(_AXIS_EPS)  # anchor reflected about positive
        s2 = (self.beta * self.alpha) * g_ap / Gc[a, a].clamp_min(_AXIS_EPS)  # positive reflected about anchor
        one, zero = torch.ones_like(g_ap), torch.zeros_like(g_ap)
        # coefficients of the sets {A, P, S1, S2} on (A, P): 4 x 2 x n
        coef = torch.stack([torch.stack([one, zero]), torch.stack([zero, one]), torch.stack([c1, s1]),
                            torch.stack([s2, c1])])  # fmt: skip

        def products(gram: torch.Tensor) -> torch.Tensor:
            blocks = gram[ap][:, ap].view(2, n, 2, n).permute(0, 2, 1, 3)  # 2 x 2 x n x n
            return torch.einsum("sui,tvj,uvij->stij", coef, coef, blocks)

        prods = products(G)
        if self.detach:  # a synthetic set's side carries no gradient
            R = x @ x.detach().T
            synth = torch.tensor([False, False, True, True], device=x.device)
            s_syn, t_syn = synth.view(4, 1, 1, 1), synth.view(1, 4, 1, 1)
            prods = torch.where(
                ~s_syn & ~t_syn,
                prods,
                torch.where(~s_syn, products(R), torch.where(~t_syn, products(R.T), prods.detach())),
            )
        logits = base.official_logits(prods)
        best, which = logits.max(dim=0)
        loss = F.cross_entropy(best, torch.arange(n, device=x.device)) + base.official_regularizer(prods)
        with torch.no_grad():
            combos = base.official_combinations
            involves_synth = torch.tensor([i >= 2 or j >= 2 for i, j in combos], device=x.device)
            off_diag = ~torch.eye(n, dtype=torch.bool, device=x.device)
            synthetic = involves_synth[which]
        self.record_stats_lazily(lambda: self._statistics(off_diag, synthetic, 2 * n, 4 * n))
        return loss

    @staticmethod
    def _statistics(chosen: torch.Tensor, synthetic: torch.Tensor, n_synthetic_points: int, n_candidates: int):
        n_chosen, n_synth = chosen.sum(), (synthetic & chosen).sum()
        return {
            "synthetic_ratio": n_synth / n_chosen.clamp_min(1),
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
