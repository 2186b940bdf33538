"""Relative weight change per depth group, ||w - w0|| / ||w0||, of a run's selected weights against the
weights it started from (the pre-trained model; for the scratch baseline its own random init)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


@dataclass
class WeightChange:
    groups: list[str]  # depth group names, input side first
    change: list[float | None]  # per group; None for groups with no starting value (the new head)
    note: str = ""  # why a run has no numbers, when it has none


def weight_change(run_dir: str | Path) -> WeightChange:
    """Per depth group: sqrt(sum ||w - w0||^2) / sqrt(sum ||w0||^2) over the group's parameters that had a
    starting value. Runs whose strategy adds modules (LoRA, adapters) are skipped with a note: their change
    lives in the added modules, and merging them into effective weights is not done here."""
    from transferlab.models import create_model
    from transferlab.runs import load_run

    config, _, model, _ = load_run(run_dir)
    added = sorted(model.new_markers)
    names = [g.name for g in model.depth_groups]
    if not has_reproducible_start(config.model, config.weights):
        return WeightChange(names, [None] * len(names), "a timm architecture without --weights starts from "
                            "random weights: there is no pre-trained w0 to compare with")
    if added:
        return WeightChange(names, [None] * len(names),
                            f"strategy adds modules ({', '.join(added)}); effective merged weights not compared")
    with torch.random.fork_rng(devices=[]):
        start = create_model(config.model, len(config.classes), weights=config.weights)
    w0 = dict(start.named_parameters())
    change: list[float | None] = []
    for group in model.grouped_parameters():
        diff = base = 0.0
        for name, p in group:
            if model.is_new_param(name) or name not in w0 or w0[name].shape != p.shape:
                continue
            ref = w0[name].detach().float()
            diff += (p.detach().float().cpu() - ref).pow(2).sum().item()
            base += ref.pow(2).sum().item()
        change.append(math.sqrt(diff) / math.sqrt(base) if base > 0 else None)
    return WeightChange(names, change)


def has_reproducible_start(model: str, weights: str | None) -> bool:
    """Whether `create_model(model, ..., weights)` gives the same starting backbone every time."""
    from transferlab.models import list_models

    return bool(weights) or model in list_models() or Path(model).is_dir() or model.startswith("hf:")
