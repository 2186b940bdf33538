"""ib_select measures its standardising variance in the BatchNorm mode its penalty's reference runs in."""
from __future__ import annotations

import torch

from tests.conftest import TINY_IMAGE_MODEL
from transferlab.models import create_model
from transferlab.nn_utils import is_batchnorm
from transferlab.strategies import StrategyContext
from transferlab.strategies.ib_select import IBSelect, correlation_ratio


def _batches():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(48) % 3
    # class-dependent inputs far from the pre-trained statistics: batch and running statistics differ
    pixels = torch.randn(48, 3, 32, 32, generator=gen) * 2 + labels[:, None, None, None].float()
    return [{"pixel_values": pixels[i:i + 16], "labels": labels[i:i + 16]} for i in range(0, 48, 16)]


def test_variance_is_measured_in_the_penalty_s_batchnorm_mode():
    torch.manual_seed(0)
    model = create_model(TINY_IMAGE_MODEL, 3)
    batches = _batches()
    strategy = IBSelect(IBSelect.Params(samples=48))
    pretrained = [m.running_mean.clone() for m in model.modules() if is_batchnorm(m)]
    model.train()  # as the trainer runs it under `full`: every BatchNorm on batch statistics
    strategy.on_fit_start(model, StrategyContext(total_epochs=2, train_batches=lambda: iter(batches)))
    # z0 as the penalty computes it (loss_terms: the reference mirrors the fine-tuned model's BatchNorm modes)
    with torch.no_grad():
        z0 = torch.cat([strategy.reference_representation(b, mirror=True) for b in batches])
    _, variance = correlation_ratio(z0, torch.cat([b["labels"] for b in batches]), 3)
    floored = variance.clamp(min=1e-6 * float(variance.mean()) + 1e-12).float()
    torch.testing.assert_close(strategy.variance, floored, rtol=1e-5, atol=0)
    # measuring on batch statistics leaves the reference's running statistics as pre-trained
    reference = [m.running_mean for m in strategy.reference.modules() if is_batchnorm(m)]
    assert len(reference) == len(pretrained) > 0
    assert all(torch.equal(a, b) for a, b in zip(reference, pretrained))
