"""Which layers a layer-wrapping PEFT method (lora, peft:<type>) targets by default: the ones where it pays.

The rule, for convolutional models (a backbone without attention projections):

    1. a Linear or non-grouped Conv2d qualifies when the method's update for it has fewer than UPDATE_SHARE
       (1/4) of the layer's own weights:   added(layer) < in * out * k * k / 4
    2. qualifying layers are taken cheapest first (smallest added / layer share: the largest layers per added
       parameter) while the added parameters stay within BUDGET (1%) of the backbone's; the first always is.

`added(layer)` is what peft itself adds to that layer, counted on a copy of the layer alone (for LoRA
r * (in * k * k + out): lora_A is an (r, in, k, k) convolution, lora_B an (out, r, 1, 1) one). A layer peft
cannot wrap for the method (its probe raises) is no target. Depthwise and other grouped convolutions are never
default targets and are refused when named: LoRA on a depthwise 3x3 convolution has more parameters than the
layer even at rank 1 (peft PR #2202), and peft cannot merge LoRA on grouped convolutions. When no layer passes
(tiny test models), step 1 relaxes to "smaller than the layer" (added < in * out * k * k).

Why step 2: on EfficientNet-Lite0 every pointwise convolution already passes step 1 at r=8 (a rank-8 update is
3-75% of a layer), and LoRA on all of them trains 5% of the model; the budget keeps the two widest layers
(conv_head 320->1280, blocks.6.0.conv_pwl 1152->320: 3% of their weights each), 0.8% with the head.

Transformers (any Linear named like an attention projection, TEXT_TARGETS) keep their usual targets: the
attention projections, each wrapped where peft can.
"""
from __future__ import annotations

import copy
import re
import warnings
from typing import Callable

import torch
from torch import nn

from transferlab.errors import ConfigError

UPDATE_SHARE = 0.25  # step 1: an update under 1/4 of its layer
BUDGET = 0.01  # step 2: all updates together within 1% of the backbone's parameters

# Attention projections of transformer encoders, matched at the end of a path: timm ViT (qkv, attn.proj), BERT-like.
TEXT_TARGETS = (r"qkv|attn\.proj|query|key|value|attention\.output\.dense|q_proj|k_proj|v_proj|o_proj|out_proj"
                r"|q_lin|k_lin|v_lin|out_lin")


def ends_with(pattern: str, name: str) -> bool:
    return re.search(rf"(?:^|\.)(?:{pattern})$", name) is not None


def _inside_tuner(name: str) -> bool:
    """A module peft added or the base layer it wrapped (never a target of its own)."""
    from transferlab.strategies.peft_methods._registry import added_markers

    dotted = f".{name}."
    return ".base_layer." in dotted or any(m in dotted for m in added_markers())


def is_grouped(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups != 1


def candidates(model) -> list[tuple[str, nn.Module]]:
    """(path in the backbone, layer) of every Linear / Conv2d another method did not add; a layer peft already
    wraps (another slot) counts as its base layer."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    found = []
    for name, module in model.backbone.named_modules():
        if isinstance(module, BaseTunerLayer):
            found.append((name, module.get_base_layer()))
        elif isinstance(module, (nn.Linear, nn.Conv2d)) and not _inside_tuner(name) \
                and not model.is_new_param(f"backbone.{name}"):
            found.append((name, module))
    return found


def probe(make_config: Callable[[list[str]], object], layer: nn.Module) -> int | str:
    """What peft adds to `layer` for the config `make_config(["0"])` (a parameter count), or why it cannot
    wrap it (the first line of peft's error)."""
    from peft import inject_adapter_in_model

    holder = nn.Sequential(copy.deepcopy(layer))
    own = sum(p.numel() for p in holder.parameters())
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inject_adapter_in_model(make_config(["0"]), holder)
    except (ValueError, TypeError, NotImplementedError, RuntimeError) as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return sum(p.numel() for p in holder.parameters()) - own


def is_transformer(model) -> bool:
    return any(isinstance(m, nn.Linear) and ends_with(TEXT_TARGETS, n) for n, m in candidates(model))


def choose_targets(model, label: str, make_config, targets: str = "auto") -> list[str]:
    """Sorted backbone paths the method `label` (e.g. "lora", "peft:loha") wraps; ConfigError (one line) when
    none, or when `targets` names a grouped convolution or a layer peft cannot wrap for this method."""
    layers = candidates(model)
    # a few whole names of layers it can wrap, for the refusals below
    targetable = ", ".join([n for n, m in layers if not is_grouped(m)][:6]) or "(none)"
    if targets != "auto":
        named = [(n, m) for n, m in layers if ends_with(targets, n)]
        grouped = [n for n, m in named if is_grouped(m)]
        if grouped:
            raise ConfigError(f"{label}: targets={targets!r} names grouped (depthwise) convolutions such as "
                              f"{grouped[0]}: a low-rank update there has more parameters than the layer (peft "
                              f"PR #2202) and peft cannot merge it; leave them out (the layers it can target "
                              f"look like: {targetable})")
        chosen = []
        for name, module in named:
            cost = probe(make_config, module)
            if isinstance(cost, str):
                raise ConfigError(f"{label}: peft cannot wrap {name} ({type(module).__name__}): {cost}")
            chosen.append(name)
        if not chosen:
            raise ConfigError(f"{label}: targets={targets!r} matches no Linear or (non-grouped) Conv2d layer of "
                              f"{model.cfg.name}; the layers it can target look like: {targetable}")
        return sorted(chosen)
    if is_transformer(model):
        named = [(n, m) for n, m in layers if isinstance(m, nn.Linear) and ends_with(TEXT_TARGETS, n)]
        costs = {n: probe(make_config, m) for n, m in named}
        chosen = [n for n, c in costs.items() if not isinstance(c, str)]
        why = next((c for c in costs.values() if isinstance(c, str)), "")
    else:
        named = [(n, m) for n, m in layers if not is_grouped(m)]
        costs = {n: probe(make_config, m) for n, m in named}
        sizes = {n: m.weight.numel() for n, m in named}
        fits = {n: c for n, c in costs.items() if not isinstance(c, str)}
        chosen = _within_budget(model, fits, sizes, UPDATE_SHARE) \
            or _within_budget(model, fits, sizes, 1.0)  # tiny models: every update is a large share
        kinds = sorted({type(m).__name__ for _, m in named})
        why = next((c for c in costs.values() if isinstance(c, str)), "")
        if not fits and named:
            raise ConfigError(f"{label} does not apply to {model.cfg.name}: peft cannot wrap its "
                              f"{'/'.join(kinds)} layers ({why})")
    if not layers:
        raise ConfigError(f"{label} does not apply to {model.cfg.name}: its backbone has no Linear or (non-grouped) "
                          f"Conv2d layer to wrap")
    if not chosen:
        raise ConfigError(f"{label} does not apply to {model.cfg.name}: no layer where its update is smaller than "
                          f"the layer{f' ({why})' if why else ''}")
    return sorted(chosen)


def _within_budget(model, costs: dict[str, int], sizes: dict[str, int], share: float) -> list[str]:
    """Layers whose update is under `share` of the layer, cheapest share first, while the sum stays within
    BUDGET of the backbone's parameters (the first layer always)."""
    budget = BUDGET * sum(p.numel() for n, p in model.backbone.named_parameters()
                          if not model.is_new_param(f"backbone.{n}"))
    order = sorted((c / sizes[n], n) for n, c in costs.items() if c < share * sizes[n])
    chosen, total = [], 0
    for _, name in order:
        if chosen and total + costs[name] > budget:
            break
        chosen.append(name)
        total += costs[name]
    return chosen
