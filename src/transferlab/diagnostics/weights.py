"""Relative weight change per depth group: how far fine-tuning moved the weights the forward pass uses.

    change(group) = sqrt(sum_p ||w_p - w0_p||^2) / sqrt(sum_p ||w0_p||^2)

over the group's parameters p that have a starting value w0 (same plain name, same shape); None for a group
with none (the new head). One definition for `transferlab diagnose drift` and the comparison report.

Parameter-efficient runs are measured on their *effective* weights, on a copy (the run's model is untouched):
LoRA is merged first, W + (alpha/r) B A (peft's merge, `LoRA.merge_slot`); BitFit's trained biases already sit
in the base's places. Adapters are extra layers beside backbone weights that never change: the change of the
backbone is 0 by construction and says nothing about the adapters, so they get None and a note.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence

import torch

from transferlab.errors import ConfigError

ADAPTER_NOTE = "adapters add layers; their backbone weights are unchanged"
RANDOM_START_NOTE = ("a timm architecture without --weights starts from random weights: there is no pre-trained "
                     "w0 to compare with")


@torch.no_grad()
def relative_weight_change(params: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor],
                           groups: Sequence[Iterable[str]]) -> list[float | None]:
    """Per group (an iterable of names in `params`): sqrt(sum ||w - w0||^2) / sqrt(sum ||w0||^2) over the
    names whose `reference` value exists with the same shape; None where there is none (or it is all zero).
    Sums are in float64 on the CPU."""
    out: list[float | None] = []
    for names in groups:
        diff = base = 0.0
        for name in names:
            w0 = reference.get(name)
            w = params[name]
            if w0 is None or w0.shape != w.shape:
                continue
            w0 = w0.detach().to("cpu", torch.float64)
            diff += float((w.detach().to("cpu", torch.float64) - w0).pow(2).sum())
            base += float(w0.pow(2).sum())
        out.append(math.sqrt(diff) / math.sqrt(base) if base > 0 else None)
    return out


def effective_model(model, strategy=None):
    """(a model whose parameters are the weights `model`'s forward pass uses, note): `model` itself when no
    strategy adds modules, a merged deep copy for LoRA (and BitFit), None and a note for adapters."""
    from transferlab.strategies.peft_methods import DEFAULT_SLOT, PeftStrategy

    parts = getattr(strategy, "parts", [strategy])
    peft = next((p for p in parts if isinstance(p, PeftStrategy)), None)
    if peft is None:
        if model.new_markers:
            return None, (f"the model has added modules ({', '.join(sorted(model.new_markers))}) but no strategy "
                          f"to merge them was given")
        return model, ""
    merged = copy.deepcopy(model)
    try:
        peft.merge_slot(merged, DEFAULT_SLOT)
    except ConfigError:  # a method whose modules are extra layers (adapters)
        return None, f"{peft.method}: {ADAPTER_NOTE}"
    return merged, ""


def plain_start_weights(reference) -> dict[str, torch.Tensor]:
    """The starting weights w0 of a fresh build (plain, or with a strategy's modules), by plain name, without
    the parameters that have no pre-trained value (head, LoRA, adapters)."""
    from transferlab.strategies.peft_methods._base import plain_name

    return {plain_name(n): p for n, p in reference.named_parameters() if not reference.is_new_param(n)}


def model_weight_change(model, reference, strategy=None) -> tuple[list[float | None], str]:
    """(change per depth group of `model`, note): its effective weights against `reference`'s, a fresh build
    of the model the run started from. All None, with the note, where there is no effective weight to compare."""
    effective, note = effective_model(model, strategy)
    if effective is None:
        return [None] * len(model.depth_groups), note
    params = dict(effective.named_parameters())
    groups = [[n for n, _ in group if not effective.is_new_param(n)] for group in effective.grouped_parameters()]
    return relative_weight_change(params, plain_start_weights(reference), groups), ""


def run_weight_change(config, model, reference, strategy=None) -> tuple[list[float | None], str]:
    """`model_weight_change` of a run (its `config`, trained `model` and `strategy`), or all None with a note
    when its start is not reproducible (a fresh build is then another random draw, not its w0)."""
    from transferlab.diagnostics._common import has_reproducible_start

    if not has_reproducible_start(config.model, config.weights):
        return [None] * len(model.depth_groups), RANDOM_START_NOTE
    return model_weight_change(model, reference, strategy)
