"""Training objectives on the GPU path: no host synchronisation in a steady-state step, one whole graph under
``torch.compile(fullgraph=True)``, and compiled values and gradients equal to eager ones.

Every recipe is covered: the five pair losses, each plain and with Symmetrical Synthesis per anchor and per pair
(N-pair and angular also in the authors' variant), and the CTL objective in the paper's and the official variant.
Syncs are counted with a dispatch mode on the CPU (``tests/syncs.py``): an operation whose result the host must
read there is one that drains a GPU's launch queue. Graph breaks come from ``torch._dynamo.explain`` (tracing
only, fast); the compiled-vs-eager comparisons run inductor and are slow, two of them run by default.
"""

from __future__ import annotations

import pytest
import torch

from centrum.training.objectives import CTLObjective, MetricObjective
from centrum.validation import trusted_inputs
from syncs import SyncCounter

P, M, D, CLASSES = 4, 3, 16, 10


def _recipes() -> list[tuple[str, dict]]:
    recipes: list[tuple[str, dict]] = [("ctl-paper", {}), ("ctl-official", {"centroid_variant": "official"})]
    for loss in ("contrastive", "triplet", "npair", "lifted", "angular"):
        recipes.append((loss, {"loss": loss}))
        for candidates in ("anchor", "pair"):
            recipes.append(
                (f"{loss}+symm-{candidates}", {"loss": loss, "symm": True, "symm_options": {"candidates": candidates}})
            )
        if loss in ("npair", "angular"):
            recipes.append(
                (f"{loss}+symm-official", {"loss": loss, "symm": True, "symm_options": {"variant": "official"}})
            )
    return recipes


RECIPES = _recipes()
IDS = [name for name, _ in RECIPES]


def _objective(name: str, options: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    if name.startswith("ctl"):
        return CTLObjective(CLASSES, D, batch_layout=(P, M), **options)
    return MetricObjective(batch_layout=(P, M), **options)


def _batch(seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    classes = torch.randperm(CLASSES, generator=gen)[:P]
    labels = classes.repeat_interleave(M)  # the P x M sampler's class-major blocks
    raw = torch.randn(P * M, D, generator=gen, requires_grad=True)
    logits = torch.randn(P * M, CLASSES, generator=gen, requires_grad=True)
    return {"raw": raw, "bn": raw, "logits": logits}, labels, [raw, logits]


@pytest.mark.parametrize(("name", "options"), RECIPES, ids=IDS)
def test_steady_state_step_makes_no_host_sync(name, options):
    objective = _objective(name, options)
    with trusted_inputs():
        for seed in range(2):  # warm-up: first-call caches (Symm's layout) may be built with syncs
            outputs, labels, _ = _batch(seed)
            objective(outputs, labels)["loss"].backward()
        outputs, labels, _ = _batch(2)
        with SyncCounter() as counter:
            terms = objective(outputs, labels)
            terms["loss"].backward()
    assert counter.total == 0, dict(counter.counts)
    assert all(isinstance(v, torch.Tensor) for v in terms.values())  # statistics too stay tensors


def test_the_sync_counter_sees_a_sync():
    """The counter has teeth: the same objective with value checks on (a direct library call) syncs."""
    objective = _objective("triplet+symm-anchor", dict(RECIPES)["triplet+symm-anchor"])
    outputs, labels, _ = _batch()
    with SyncCounter() as counter:
        objective(outputs, labels)["loss"].backward()
    assert counter.total > 0


@pytest.mark.parametrize(("name", "options"), RECIPES, ids=IDS)
def test_objective_traces_as_one_graph(name, options):
    torch._dynamo.reset()
    outputs, labels, _ = _batch()
    explanation = torch._dynamo.explain(_objective(name, options))(outputs, labels)
    assert explanation.graph_break_count == 0, [str(b.reason) for b in explanation.break_reasons]
    assert explanation.graph_count == 1


def _compiled_matches_eager(name: str, options: dict) -> None:
    torch._dynamo.reset()
    objective = _objective(name, options)
    compiled = torch.compile(objective, fullgraph=True)
    for seed in range(2):  # two batches: the compiled graph is reused, not re-traced per labelling
        outputs, labels, leaves = _batch(seed)
        eager_terms = objective(outputs, labels)
        eager_grads = torch.autograd.grad(eager_terms["loss"], leaves, allow_unused=True)
        compiled_terms = compiled(outputs, labels)
        compiled_grads = torch.autograd.grad(compiled_terms["loss"], leaves, allow_unused=True)
        assert set(compiled_terms) == set(eager_terms)
        for key, value in eager_terms.items():
            torch.testing.assert_close(
                compiled_terms[key].detach().float(), value.detach().float(), atol=1e-5, rtol=1e-5
            )
        for got, want in zip(compiled_grads, eager_grads, strict=True):
            if want is None:
                assert got is None or not got.any()
                continue
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("name", "options"), [r for r in RECIPES if r[0] in ("ctl-official", "lifted+symm-pair")], ids=["ctl", "lifted"]
)
def test_compiled_equals_eager(name, options):
    _compiled_matches_eager(name, options)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "options"), RECIPES, ids=IDS)
def test_compiled_equals_eager_every_recipe(name, options):
    _compiled_matches_eager(name, options)


def test_add_with_alpha_of_a_matrix_product_compiles_right():
    """Why distances are written ``a + b - 2 x.y`` and not ``torch.add(..., alpha=-2)``: inductor (torch 2.13, CPU)
    folds the latter into a wrong fused product. If this starts passing with the alpha form, the workaround in
    :meth:`centrum.distances.Metric.from_gram` can go."""
    torch._dynamo.reset()
    x, y = torch.randn(8, 8), torch.randn(8, 8)
    written_out = torch.compile(lambda a, b: a + 1 - 2.0 * (a @ b.T), fullgraph=True)
    torch.testing.assert_close(written_out(x, y), x + 1 - 2.0 * (x @ y.T))
