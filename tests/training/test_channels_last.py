"""``trainer.channels_last``: ``auto`` lays a CNN out channels-last on the CPU as on CUDA (oneDNN's faster
kernels; ``benchmarks/models_throughput.py --layout``), ``false`` keeps it contiguous, and the layout changes
only the order of floating-point sums: both train to the same weights within rounding."""

from __future__ import annotations

import torch

from centrum.models import build_model, has_convolutions, prefers_channels_last
from centrum.training import train


def _conv_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]


def test_the_rule_picks_channels_last_for_convolutions_on_cpu_and_cuda():
    cnn = build_model("small_cnn")
    assert has_convolutions(cnn) and prefers_channels_last(cnn, "cpu") and prefers_channels_last(cnn, "cuda")
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    assert not has_convolutions(mlp) and not prefers_channels_last(mlp, "cpu")
    assert not prefers_channels_last(cnn, "mps")  # no channels-last kernels assumed elsewhere


def test_trained_layout_and_weights_agree_across_layouts(stripes_splits, tiny_config, tmp_path):
    runs = {
        layout: train(
            tiny_config("ctl", max_epochs=2, channels_last=layout),
            tmp_path / f"run-{layout}",
            splits=stripes_splits,
            enable_progress_bar=False,
        )
        for layout in ("auto", False)
    }
    auto, plain = (_conv_weights(runs[layout].model) for layout in ("auto", False))
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in auto)  # auto: channels-last on the CPU
    assert not all(w.is_contiguous() for w in auto)  # (the check can tell the layouts apart)
    assert all(w.is_contiguous() for w in plain)
    a, b = (dict(r.model.state_dict()) for r in runs.values())
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4, msg=key)
