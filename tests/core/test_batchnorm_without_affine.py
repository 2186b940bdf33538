"""A BatchNorm layer without affine parameters follows the train/eval rule of the depth group it sits in."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import TINY_IMAGE_MODEL
from transferlab.models import create_model
from transferlab.strategies import parse_strategy
from transferlab.training.config import TrainConfig
from transferlab.training.trainer import Trainer

GROUP = "blocks.1"  # the affine-less BatchNorm is appended inside this depth group


def _model_with_plain_batchnorm():
    """The tiny EfficientNet with an nn.BatchNorm2d(C, affine=False) after the last module of `blocks.1`
    (module path backbone.blocks.1.1: the group's prefix covers it)."""
    model = create_model(TINY_IMAGE_MODEL, 2)
    block = model.backbone.blocks[1]
    shapes = []
    handle = block.register_forward_hook(lambda m, i, out: shapes.append(out.shape))
    with torch.no_grad():
        model.eval()({"pixel_values": torch.randn(2, 3, 32, 32)})
    handle.remove()
    plain = nn.BatchNorm2d(shapes[0][1], affine=False)
    block.append(plain)
    assert model.depth_groups[model.group_index("backbone.blocks.1.1")].name == GROUP
    return model, plain


@pytest.mark.parametrize("strategy, bn_stats, updates", [
    ("full", "auto", True),
    ("freeze:k=1", "auto", True),  # blocks.1 (group 2) trains
    ("freeze:k=3", "auto", False),  # stem, blocks.0 and blocks.1 frozen
    ("linear_probe", "auto", False),
    ("full", "frozen", False),
    ("lora", "auto", False),  # only added modules train in the group: its affine BatchNorm layers keep theirs too
])
def test_batchnorm_without_parameters_follows_its_group(strategy, bn_stats, updates):
    torch.manual_seed(0)
    model, plain = _model_with_plain_batchnorm()
    strat = parse_strategy(strategy)
    strat.prepare_model(model)
    trainable = strat.trainable(model, 0)
    for name, p in model.named_parameters():
        p.requires_grad_(trainable is None or name in trainable)
    trainer = Trainer(model, strat, data=None, config=TrainConfig(bn_stats=bn_stats), out_dir="/nonexistent")
    trainer._train_mode()
    assert plain.training == updates
    before = plain.running_mean.clone()
    with torch.no_grad():
        model({"pixel_values": torch.randn(4, 3, 32, 32) * 3 + 1})
    assert (not torch.equal(plain.running_mean, before)) == updates, (strategy, bn_stats)
