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

from centrum.distances import gram_diagonal, l2_normalize
from centrum.losses._masks import Negatives, block_pairs, class_index, first_pairs, ordered_positive_pairs
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

    def __init__(self, labels: torch.Tensor, samples_per_class: int | None = None) -> None:
        N = labels.shape[0]
        self.N = N
        if samples_per_class is None:  # from the labels: data-dependent shapes
            self.source, self.axis = ordered_positive_pairs(labels)
            self._blocks: tuple[int, int] | None = None
        else:  # class-major blocks: every index follows from P and M, nothing waits on the device
            P, M = N // samples_per_class, samples_per_class
            self.source, self.axis = block_pairs(P, M, labels.device)
            self._blocks = (P, M)
        self.pair_flat = self.source * N + self.axis  # flat index of G[source, axis]
        # with blocks, a sample's block stands for its label: the layout depends on N and M only
        keys = labels if self._blocks is None else torch.arange(N, device=labels.device) // self._blocks[1]
        bank_labels = torch.cat([keys, keys.index_select(0, self.source)])
        self.same = keys.unsqueeze(1) == bank_labels.unsqueeze(0)  # N x K
        self.size = bank_labels.shape[0]
        self._classes: tuple[torch.Tensor, int, torch.Tensor] | None = None
        self._groups: tuple[torch.Tensor, int, int, bool] | None = None
        self._fast: dict[str, torch.Tensor] | None = None
        self._weights: dict[tuple[float, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self._labels = labels

    def fast(self) -> dict[str, torch.Tensor]:
        """Index tensors of the per-anchor fast path (built once per labelling). Candidate ``b`` is
        ``c1 x[i1] + c2 x[i2]`` (originals: ``i1 = i2 = b``); ``positions`` (K x 5) are the flat positions
        in ``G`` its value reads, ``[a N + i1, a N + i2, i1 (N + 1), i1 N + i2, i2 (N + 1)]``, less the row
        offset ``a N`` (``row_offset``, N x 5); ``synth_gather``: the flat positions of ``G[k, l]``,
        ``G[k, k]``, ``G[l, l]`` of every synthetic point; ``pair_cols``: its sources then its axes."""
        if self._fast is None:
            N, source, axis = self.N, self.source, self.axis
            arange = torch.arange(N, device=source.device)
            i1, i2 = torch.cat([arange, source]), torch.cat([arange, axis])
            self._fast = {
                "i2": i2,
                "positions": torch.stack([i1, i2, i1 * (N + 1), i1 * N + i2, i2 * (N + 1)], dim=1),
                "row_offset": (arange * N).unsqueeze(1) * torch.tensor([1, 1, 0, 0, 0], device=source.device),
                "synth_gather": torch.cat([self.pair_flat, source * (N + 1), axis * (N + 1)]),
                "pair_cols": torch.cat([source, axis]),
            }
        return self._fast

    def weight_constants(self, c1: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(originals' gradient weights, synthetic constants)`` of :class:`_ChosenCandidates`: N x 3 x 5
        rows ``[[1, 0, 0, 0, 0], 0, [0, 0, 1, 0, 0]]``, and the columns ``0, c1, c1^2`` (3 x S)."""
        key = (c1, dtype)
        if key not in self._weights:
            device, S = self.source.device, self.source.shape[0]
            orig = torch.zeros(self.N, 3, 5, dtype=dtype, device=device)
            orig[:, 0, 0], orig[:, 2, 2] = 1.0, 1.0
            consts = torch.tensor([0.0, c1, c1 * c1], dtype=dtype, device=device).unsqueeze(1).expand(3, S)
            self._weights[key] = (orig, consts)
        return self._weights[key]

    def classes(self) -> tuple[torch.Tensor, int, torch.Tensor]:
        """``(inverse, C, bank_classes)``: each sample's class position, the class count, each candidate's."""
        if self._classes is None:
            if self._blocks is None:
                _, inverse, counts = class_index(self._labels)
                C = counts.shape[0]
            else:
                C, M = self._blocks
                inverse = torch.arange(self.N, device=self._labels.device) // M
            self._classes = inverse, C, torch.cat([inverse, inverse.index_select(0, self.source)])
        return self._classes

    @property
    def group_size(self) -> int | None:
        """Candidates per class when every class has the same number (M originals + M (M - 1) synthetic points
        in class-major blocks), known without reading the labels; ``None`` otherwise."""
        return None if self._blocks is None else self._blocks[1] ** 2

    def grouped_topk(self, keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row and per class, the ``k`` smallest ``keys`` (N x K, excluded entries already ``inf``):
        ``(index, valid)``, N x (C k), as :func:`~centrum.losses.mining.topk_hardest` with the candidates'
        classes as groups, with the column grouping (which depends on the labels only) cached."""
        if self._groups is None and self.group_size is not None:
            # equal groups: a stable sort by class is the grid, read row by row (no count from the data)
            _, C, bank_classes = self.classes()
            order = torch.argsort(bank_classes, stable=True)
            self._groups, self._column_at = (order, C, self.group_size, True), order.view(C, self.group_size)
        if self._groups is None:
            _, C, bank_classes = self.classes()
            counts = torch.bincount(bank_classes, minlength=C)
            order = torch.argsort(bank_classes, stable=True)
            m = int(counts.max())
            starts = torch.cumsum(counts, 0) - counts
            slot = torch.empty_like(bank_classes)
            slot[order] = torch.arange(bank_classes.shape[0], device=keys.device) - starts[bank_classes[order]]
            column_at = torch.zeros(C, m, dtype=torch.long, device=keys.device)
            column_at[bank_classes, slot] = torch.arange(bank_classes.shape[0], device=keys.device)
            balanced = m * C == bank_classes.shape[0]
            # padded slot -> flat position in a C x m grid; padding stays inf
            self._groups = (order if balanced else bank_classes * m + slot), C, m, balanced
            self._column_at = column_at
        cols, C, m, balanced = self._groups
        R = keys.shape[0]
        if balanced:
            padded = keys.index_select(1, cols).view(R, C, m)
        else:
            padded = keys.new_full((R, C * m), float("inf")).index_copy_(1, cols, keys).view(R, C, m)
        kk = min(k, m)
        top, pos = padded.topk(kk, dim=-1, largest=False)  # R x C x kk
        valid = top < float("inf")
        index = self._column_at.expand(R, -1, -1).gather(-1, pos).masked_fill_(~valid, 0)
        if kk < k:
            index = torch.cat([index, index.new_zeros(R, C, k - kk)], dim=-1)
            valid = torch.cat([valid, valid.new_zeros(R, C, k - kk)], dim=-1)
        return index.flatten(1), valid.flatten(1)


def _candidate_table(
    Gd: torch.Tensor, layout: _Layout, alpha: float, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From a Gram matrix (no gradient): ``(inner, sq, W)``, the N x K inner products of every sample with
    every candidate (originals then synthetics), the K candidates' squared norms, and the K x 3 x 5 gradient
    weights of :class:`_ChosenCandidates`."""
    N, fast = layout.N, layout.fast()
    a1, cab = beta * (1.0 - alpha), beta * alpha
    g_kl, g_kk, g_ll = Gd.reshape(-1).index_select(0, fast["synth_gather"]).view(3, -1).unbind(0)
    m = g_ll.clamp_min(_AXIS_EPS)
    r = torch.div(cab, m)  # d c2 / d G[k, l]
    a2 = g_kl * r  # c2 = cab G[k, l] / max(G[l, l], eps)
    two_a1_gkl = g_kl * (2.0 * a1)
    # |a1 x_k + a2 x_l|^2 = a1^2 g_kk + a2 (2 a1 g_kl + a2 g_ll)
    synth_sq = torch.addcmul(two_a1_gkl, a2, g_ll).mul_(a2)
    synth_sq = synth_sq.add_(g_kk, alpha=a1 * a1) if a1 != 0.0 else synth_sq
    sq = torch.cat([Gd.diagonal(), synth_sq])
    g_ak, g_al = Gd.index_select(1, fast["pair_cols"]).view(N, 2, -1).unbind(1)
    inner = torch.cat([Gd, torch.addcmul(g_ak * a1, g_al, a2)], dim=1)
    # gradient weights of a synthetic point's inner product (rows 0, 1) and squared norm (row 2) w.r.t.
    # G[a, k], G[a, l], G[k, k], G[k, l], G[l, l]; row 1 is multiplied by the anchor's G[a, l]
    qn = torch.div(a2, m).neg_().masked_fill_(g_ll < _AXIS_EPS, 0.0)  # d c2 / d G[l, l] (none below eps)
    t = torch.addcmul(two_a1_gkl, a2, g_ll, value=2.0)  # d |synthetic|^2 / d c2
    orig, (zero, c1, c1_sq) = layout.weight_constants(a1, Gd.dtype)
    W_syn = torch.stack(
        [c1, a2, zero, zero, zero,
         zero, zero, zero, r, qn,
         zero, zero, c1_sq, torch.addcmul(a2 * (2.0 * a1), t, r), torch.addcmul(a2 * a2, t, qn)], dim=1
    )  # fmt: skip
    return inner, sq, torch.cat([orig, W_syn.view(-1, 3, 5)])


class _ChosenCandidates(torch.autograd.Function):
    """The chosen candidates' inner products with their anchor and their squared norms, N x S each, as a
    function of the Gram matrix ``G`` alone, with a backward that scatters into ``dG`` in one ``index_add_``.

    Candidate ``b`` is ``c1 x[i1] + c2 x[i2]`` with ``c2 = c G[i1, i2] / max(G[i2, i2], eps)`` for a synthetic
    point (originals: ``c1 = 1, c2 = 0, i1 = i2 = b``), so ``inner = c1 G[a, i1] + c2 G[a, i2]`` and
    ``sq = c1^2 G[i1, i1] + 2 c1 c2 G[i1, i2] + c2^2 G[i2, i2]``. Both are read off ``inner`` and ``sq``
    (:func:`_candidate_table` of ``G``); the gradient w.r.t. the five entries of ``G`` a value reads is
    ``[d_inner, d_inner G[a, i2], d_sq] @ W[b]`` (``W``: K x 3 x 5, see :func:`_candidate_table`).
    First order only.
    """

    @staticmethod
    def forward(ctx, G, inner, sq, W, index, i2, positions, row_offset):
        ctx.set_materialize_grads(False)
        g_ai2 = G.detach().gather(1, i2[index])
        ctx.save_for_backward(W, index, g_ai2, positions, row_offset)
        return inner.gather(1, index), sq[index]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_inner, d_sq):
        W, index, g_ai2, positions, row_offset = ctx.saved_tensors
        if d_inner is None and d_sq is None:
            return (None,) * 8
        if d_inner is None:
            d_inner = torch.zeros_like(d_sq)
        grads = [d_inner, d_inner * g_ai2] + ([] if d_sq is None else [d_sq])
        w = W[index, : len(grads)].mul_(torch.stack(grads, dim=-1).unsqueeze(-1)).sum(-2)
        pos = positions[index].add_(row_offset.unsqueeze(1))
        N = g_ai2.shape[0]
        dG = w.new_zeros(N * N).index_add_(0, pos.view(-1), w.view(-1)).view(N, N)
        return dG, None, None, None, None, None, None, None


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
        sq_g = gram_diagonal(G, x)
        sq_c = sq_g.detach() if detach else sq_g
        g_kl = Gc.reshape(-1).index_select(0, layout.pair_flat)
        g_kk, g_ll = sq_c.index_select(0, layout.source), sq_c.index_select(0, layout.axis)
        self.a1 = beta * (1.0 - alpha)
        self.a2 = g_kl / g_ll.clamp_min(_AXIS_EPS) * (beta * alpha)
        # |a1 x_k + a2 x_l|^2 = a1^2 g_kk + a2 (2 a1 g_kl + a2 g_ll)
        synth_sq = torch.add(g_ll * self.a2, g_kl, alpha=2.0 * self.a1).mul_(self.a2)
        synth_sq = synth_sq.add_(g_kk, alpha=self.a1 * self.a1) if self.a1 != 0.0 else synth_sq
        self.sq = torch.cat([sq_g, synth_sq])  # K squared norms
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


class _WatchedNegatives:
    """The last call's chosen negatives as :attr:`SymmetricalSynthesis.last_backward_stats` reads them: their
    values (detached), which are negatives, which synthetic, and their gradient once the backward pass ran."""

    def __init__(self, values: torch.Tensor, chosen, synthetic) -> None:
        self.values, self.grad = values, None
        self._chosen, self._synthetic = chosen, synthetic

    @property
    def mask(self) -> torch.Tensor:
        return self._chosen() if callable(self._chosen) else self._chosen

    @property
    def is_synthetic(self) -> torch.Tensor:
        return self._synthetic() if callable(self._synthetic) else self._synthetic


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

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, samples_per_class: int | None = None
    ) -> torch.Tensor:
        """The base loss of the batch with Symm's negatives; a scalar tensor.

        ``samples_per_class=M`` declares the batch to be in class-major blocks of M (rows ``c M .. c M + M - 1``
        of one class, each block another class: the P x M sampler's order). Then the same-class pairs and the
        classes of the candidates follow from N and M alone: no step waits on the device and ``torch.compile``
        traces the loss whole. Without it they are read off the labels (any layout; the host waits on the
        device). The declaration is checked where value checks run.
        """
        e, lab = check_pair_batch(embeddings, labels, samples_per_class)
        layout = self._layout_for(lab, samples_per_class)
        if layout.source.numel() == 0:
            raise ValueError(
                f"no class in labels has two samples (all {lab.shape[0]} labels are distinct); Symmetrical "
                "Synthesis needs same-class pairs: sample batches as P classes x M >= 2 samples"
            )
        x = self.base_loss.prepare(e)
        G = x @ x.T
        if self.variant == "official":
            return self._official(x, G, lab, samples_per_class)
        return self._paper(x, G, lab, layout)

    def _layout_for(self, labels: torch.Tensor, samples_per_class: int | None = None) -> _Layout:
        """The :class:`_Layout` of ``labels``, cached while the labelling (or the declared blocks) stays the same;
        built afresh inside a compiled graph, where it is traced once and folded into constants."""
        if torch.compiler.is_compiling():
            return _Layout(labels, samples_per_class)
        if samples_per_class is None:
            key = (labels.device, labels.shape[0], labels.cpu().numpy().tobytes())
        else:
            key = (labels.device, labels.shape[0], int(samples_per_class))
        if getattr(self, "_layout_key", None) != key:
            self._layout_key, self._layout = key, _Layout(labels, samples_per_class)
        return self._layout

    def _paper(self, x: torch.Tensor, G: torch.Tensor, lab: torch.Tensor, layout: _Layout) -> torch.Tensor:
        base = self.base_loss
        fast_path = self.candidates == "anchor" and not self.detach and not getattr(base, "uses_candidate_inner", True)
        # the fast path's hand-written backward saves eager launches; compiled, inductor fuses the general path
        # (and differentiates the fast one wrongly: tests/losses/test_compiled.py)
        if fast_path and not torch.compiler.is_compiling():
            return self._anchor_fast(x, G, lab, layout)
        metric, k, N = base.metric, self.top_k, x.shape[0]
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
                    index, valid = layout.grouped_topk(keys, k)
            values = metric.from_gram(inner.gather(1, index), sq, bank.sq[index])
            synthetic = index >= N
        else:
            values, index, valid, synthetic = self._pair_candidates(bank, layout)
        negatives = Negatives(values, valid, index, inner, synthetic)
        loss = base.loss_from_negatives(x, mat, lab, negatives)
        anchor_rows = base.anchor_rows
        if getattr(base, "uses_candidate_inner", False):  # angular reads its negatives through their inner products
            self._watch_gradient(
                inner, lambda: valid & anchor_rows(lab).unsqueeze(1), synthetic, pick=lambda g: g.gather(1, index)
            )
        else:
            self._watch_gradient(values, lambda: valid & anchor_rows(lab).unsqueeze(1), synthetic)
        self.record_stats_lazily(
            lambda: self._statistics(valid & anchor_rows(lab).unsqueeze(1), synthetic, bank.size - N, bank.size)
        )
        return loss

    def _anchor_fast(self, x: torch.Tensor, G: torch.Tensor, lab: torch.Tensor, layout: _Layout) -> torch.Tensor:
        """Per-anchor candidates without detach, for a base loss that needs no candidate inner products: every
        candidate quantity is computed without gradient, the chosen ones' inner products and norms are taken
        through :class:`_ChosenCandidates`, whose backward is one scatter into ``dG``."""
        base, metric, k, N = self.base_loss, self.base_loss.metric, self.top_k, x.shape[0]
        with torch.no_grad():
            inner, sq_all, W = _candidate_table(G.detach(), layout, self.alpha, self.beta)
            keys = metric.ranking_keys(inner, sq_all.unsqueeze(0)).masked_fill_(layout.same, float("inf"))
            if k == 1 and base.uses_nearest_negative_only:  # the hardest of all other-class candidates
                best, index = keys.min(1, keepdim=True)
                valid = best < float("inf")
            else:
                index, valid = layout.grouped_topk(keys, k)
        fast = layout.fast()
        chosen_inner, chosen_sq = _ChosenCandidates.apply(
            G, inner, sq_all, W, index, fast["i2"], fast["positions"], fast["row_offset"]
        )
        sq = gram_diagonal(G, x).unsqueeze(1)
        mat = metric.from_gram(G, sq, sq.T)
        values = metric.from_gram(chosen_inner, sq, chosen_sq)
        synthetic = index >= N
        loss = base.loss_from_negatives(x, mat, lab, Negatives(values, valid, index, None, synthetic))
        anchor_rows = base.anchor_rows
        self._watch_gradient(values, lambda: valid & anchor_rows(lab).unsqueeze(1), synthetic)
        self.record_stats_lazily(
            lambda: self._statistics(valid & anchor_rows(lab).unsqueeze(1), synthetic, layout.size - N, layout.size)
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
            size = layout.group_size
            k1, v1, ok1 = topk_hardest(
                pair_values, cross, k, bank_cls, C, largest=metric.similarity, group_size=size
            )  # K x C x k
            # per class j and class i: the k hardest of those over the points u of class i
            per_j = k1.permute(1, 0, 2).reshape(C, K * k)
            ok_j = ok1.permute(1, 0, 2).reshape(C, K * k)
            _, col, ok2 = topk_hardest(
                per_j,
                ok_j,
                k,
                bank_cls.repeat_interleave(k),
                C,
                largest=metric.similarity,
                group_size=None if size is None else size * k,
            )
            u, slot = col // k, col % k  # C_j x C_i x k
            v = v1.permute(1, 0, 2)[torch.arange(C, device=u.device).view(C, 1, 1), u, slot]
            u, v, ok = u.transpose(0, 1)[inverse], v.transpose(0, 1)[inverse], ok2.transpose(0, 1)[inverse]
        values = metric.from_gram(bank.inner(u, v), bank.sq[u], bank.sq[v]).masked_fill(~ok, 0.0)
        synthetic = (u >= bank.N) | (v >= bank.N)
        return values.flatten(1), v.masked_fill(~ok, 0).flatten(1), ok.flatten(1), synthetic.flatten(1)

    def _official(
        self, x: torch.Tensor, G: torch.Tensor, lab: torch.Tensor, samples_per_class: int | None
    ) -> torch.Tensor:
        base = self.base_loss
        if samples_per_class is None:
            a, p = first_pairs(lab)
        else:  # class-major blocks: each block's first two rows
            a = torch.arange(0, lab.shape[0], samples_per_class, device=lab.device)
            p = a + 1
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
            synth = torch.arange(4, device=x.device) >= 2  # the sets S1, S2
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
            # whether each combination involves a synthetic set (S1, S2), built on the device: no host copy
            involves_synth = torch.stack(
                [torch.full((), i >= 2 or j >= 2, device=x.device) for i, j in base.official_combinations]
            )
            off_diag = ~torch.eye(n, dtype=torch.bool, device=x.device)
            synthetic = involves_synth[which]
        self._watch_gradient(best, off_diag, synthetic)
        self.record_stats_lazily(lambda: self._statistics(off_diag, synthetic, 2 * n, 4 * n))
        return loss

    @property
    def last_backward_stats(self) -> dict[str, torch.Tensor]:
        """What the last backward pass showed of the last call's chosen negatives (empty before one, and for calls
        inside ``torch.compile``, which takes no tensor hooks): ``active_synthetic_ratio``, the share of the
        *active* negatives (those whose value received a non-zero gradient, i.e. that moved the embedding) that
        were synthetic, beside ``synthetic_ratio``'s share of the chosen ones; and the counts. A negative beyond
        the contrastive margin, or not the hardest for batch-hard triplet, is chosen but inactive. 0-d tensors
        on the loss's device, computed when read (the backward pass only keeps the gradient)."""
        watched = getattr(self, "_watched", None)
        if watched is None or watched.grad is None:
            return {}
        with torch.no_grad():
            active = watched.mask & (watched.grad != 0)
            n_active, n_synthetic = active.sum(), (active & watched.is_synthetic).sum()
        return {
            "active_synthetic_ratio": n_synthetic / n_active.clamp_min(1),
            "num_active_negatives": n_active,
            "num_active_synthetic_negatives": n_synthetic,
        }

    def _watch_gradient(self, values: torch.Tensor, chosen, synthetic, pick=None) -> None:
        """Keep the gradient of ``values`` (the chosen negatives' values, or a tensor ``pick`` maps to them) when
        it arrives, for :attr:`last_backward_stats`; ``chosen`` and ``synthetic`` (masks of their shape, or
        functions giving them) say which entries are negatives and which are synthetic."""
        self._watched = None
        if not values.requires_grad or torch.compiler.is_compiling():
            return
        watched = self._watched = _WatchedNegatives(values.detach(), chosen, synthetic)

        def keep(grad: torch.Tensor) -> None:
            watched.grad = pick(grad) if pick is not None else grad

        values.register_hook(keep)

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
