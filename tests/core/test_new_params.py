"""Which parameters are new (no pre-trained value): anchored prefixes and markers of added modules apart."""
from __future__ import annotations

import pytest

from transferlab.models import create_model


def test_a_pretrained_module_named_head_inside_the_backbone_is_not_new():
    # timm ConvNeXt keeps its final norm at backbone.head.norm: pre-trained, and L2-SP / EWC must anchor it.
    model = create_model("convnext_atto", 3)
    names = [n for n, _ in model.named_parameters()]
    inner = [n for n in names if n.startswith("backbone.head.")]
    assert inner, "convnext_atto has a backbone.head.norm"
    assert not any(model.is_new_param(n) for n in inner)
    assert model.is_new_param("head.weight") and model.is_new_param("head.bias")
    assert not any(model.is_new_param(n) for n in names if n.startswith("backbone."))


@pytest.mark.parametrize("strategy", ["lora", "adapter"])
def test_added_modules_are_new_wherever_they_sit(strategy):
    from transferlab.strategies import parse_strategy

    model = create_model("convnext_atto", 3)
    parse_strategy(strategy).prepare_model(model)
    added = [n for n, _ in model.named_parameters() if ".lora_" in n or ".tl_adapter." in n]
    assert added and all(model.is_new_param(n) for n in added)
    assert not any(model.is_new_param(n) for n, _ in model.named_parameters()
                   if n.startswith("backbone.") and n not in added)
