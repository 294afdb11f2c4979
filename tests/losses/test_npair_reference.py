"""NPairLoss against two independent references, value and gradient (issue 17, the N-pair question).

- TensorFlow's ``tf.contrib.losses.metric_learning.npairs_loss`` (the loss the Symm authors trained with),
  transcribed in NumPy with its gradient derived by hand: ``S = A P^T``; targets the same-label matrix with
  each row divided by its sum; ``mean_i softmax_cross_entropy(S_i, targets_i)``; plus
  ``reg_lambda * 0.25 * (mean_i |a_i|^2 + mean_i |p_i|^2)``.
- pytorch-metric-learning's ``NPairsLoss`` on raw inner products, with its ``LpRegularizer(power=2)`` as the
  penalty: it averages ``|x|^2`` over every sample of the batch, so weight ``l2_reg / 2`` equals TensorFlow's
  ``l2_reg / 4 (mean |a|^2 + mean |p|^2)`` when every sample is an anchor or a positive (P x 2 batches).

For one pair per class, ``log(1 + sum_n exp(s_an - s_ap))`` is exactly TensorFlow's softmax over all the
positives, its own included, with a one-hot target. Checked at the scale the GPU runs reached (norms in the
tens, logits in the hundreds), where a naive ``exp`` overflows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from centrum.losses import NPairLoss, build_loss

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_distances = pytest.importorskip("pytorch_metric_learning.distances")
pml_regularizers = pytest.importorskip("pytorch_metric_learning.regularizers")


def tf_npairs_loss(labels: np.ndarray, anchor: np.ndarray, positive: np.ndarray, reg_lambda: float):
    """NumPy transcription of TensorFlow's ``npairs_loss``: ``(loss, d loss / d anchor, d loss / d positive)``."""
    n = anchor.shape[0]
    reg = 0.25 * reg_lambda * ((anchor**2).sum(1).mean() + (positive**2).sum(1).mean())
    logits = anchor @ positive.T
    targets = (labels[:, None] == labels[None, :]).astype(np.float64)
    targets /= targets.sum(1, keepdims=True)
    shifted = logits - logits.max(1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    xent = -(targets * log_softmax).sum(1).mean()
    # d xent / d logits = (softmax - targets) / n; logits = A P^T
    g = (np.exp(log_softmax) - targets) / n
    grad_anchor = g @ positive + 0.5 * reg_lambda * anchor / n
    grad_positive = g.T @ anchor + 0.5 * reg_lambda * positive / n
    return xent + reg, grad_anchor, grad_positive


def pair_batch(P: int, D: int, scale: float, seed: int):
    """A P x 2 batch in shuffled order, and the rows of each class's first and second sample."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(P).repeat_interleave(2)[torch.randperm(2 * P, generator=g)] * 7 + 3
    x = torch.randn(2 * P, D, generator=g, dtype=torch.float64) * scale
    first, second = [], []
    for c in labels.unique(sorted=False).tolist():
        rows = (labels == c).nonzero().flatten().tolist()
        first.append(rows[0])
        second.append(rows[1])
    return x, labels, torch.tensor(first), torch.tensor(second)


@pytest.mark.parametrize(("scale", "seed"), [(0.3, 0), (1.0, 1), (3.0, 2), (25.0, 3)])
@pytest.mark.parametrize("l2_reg", [0.0, 0.002, 0.05])
def test_npair_equals_tensorflow_npairs_loss_value_and_gradient(scale, seed, l2_reg):
    x, labels, a, p = pair_batch(P=16, D=32, scale=scale, seed=seed)
    ref, ga, gp = tf_npairs_loss(labels[a].numpy(), x[a].numpy(), x[p].numpy(), l2_reg)
    for dtype in (torch.float64, torch.float32):
        xx = x.detach().to(dtype).clone().requires_grad_(True)
        loss = NPairLoss(l2_reg=l2_reg)(xx, labels)
        loss.backward()
        tol = 1e-5  # the loss computes in float32 (its prepared batch), whatever the input's dtype
        assert loss.item() == pytest.approx(ref, rel=tol, abs=tol)
        grad = xx.grad.double().numpy()
        scale_g = max(np.abs(ga).max(), np.abs(gp).max())
        np.testing.assert_allclose(grad[a.numpy()], ga, rtol=0, atol=tol * scale_g)
        np.testing.assert_allclose(grad[p.numpy()], gp, rtol=0, atol=tol * scale_g)


def test_one_pair_per_class_form_is_softmax_over_all_positives():
    # log(1 + sum_n exp(s_an - s_ap)) = -log softmax_j(s_aj)[p]: the TF form with a one-hot target row
    x, labels, a, p = pair_batch(P=5, D=4, scale=2.0, seed=7)
    s = x[a] @ x[p].T
    one_plus = torch.stack([torch.log1p(torch.exp(s[i] - s[i, i])[torch.arange(5) != i].sum()) for i in range(5)])
    softmax_form = -torch.log_softmax(s, dim=1).diagonal()
    torch.testing.assert_close(one_plus, softmax_form, rtol=1e-12, atol=1e-12)
    assert NPairLoss(l2_reg=0.0)(x, labels).item() == pytest.approx(softmax_form.mean().item(), rel=1e-6)


@pytest.mark.parametrize("scale", [0.5, 20.0])
def test_npair_equals_pml_npairs_with_lp_regularizer_value_and_gradient(scale):
    x, labels, _, _ = pair_batch(P=12, D=16, scale=scale, seed=11)
    l2_reg = 0.002
    ours_x = x.clone().requires_grad_(True)
    NPairLoss(l2_reg=l2_reg)(ours_x, labels).backward()
    ref_x = x.clone().requires_grad_(True)
    ref = pml_losses.NPairsLoss(
        distance=pml_distances.DotProductSimilarity(normalize_embeddings=False),
        embedding_regularizer=pml_regularizers.LpRegularizer(p=2, power=2),
        embedding_reg_weight=l2_reg / 2,
    )(ref_x, labels)
    ref.backward()
    ours = NPairLoss(l2_reg=l2_reg)(x, labels)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(ours_x.grad, ref_x.grad, rtol=1e-4, atol=1e-6 * ref_x.grad.abs().max().item())


def test_normalised_npair_equals_pml_default_gradient():
    # PML's default NPairsLoss normalises (DotProductSimilarity(normalize_embeddings=True)): logits in [-1, 1]
    x, labels, _, _ = pair_batch(P=12, D=16, scale=4.0, seed=5)
    ours_x = x.clone().requires_grad_(True)
    NPairLoss(l2_reg=0.0, normalize=True)(ours_x, labels).backward()
    ref_x = x.clone().requires_grad_(True)
    pml_losses.NPairsLoss()(ref_x, labels).backward()
    torch.testing.assert_close(ours_x.grad, ref_x.grad, rtol=1e-4, atol=1e-6 * ref_x.grad.abs().max().item())


def test_registry_npair_is_the_tensorflow_loss():
    # what `objective.loss: npair` with no options trains: l2_reg 0.002, inner products, TF's factor 1/4
    x, labels, a, p = pair_batch(P=8, D=8, scale=10.0, seed=2)
    ref, _, _ = tf_npairs_loss(labels[a].numpy(), x[a].numpy(), x[p].numpy(), 0.002)
    assert build_loss("npair")(x, labels).item() == pytest.approx(ref, rel=1e-5)
