"""Relative weight change per depth group, ||w - w0|| / ||w0||, of a run's selected weights against the
weights it started from (the pre-trained model; for the scratch baseline its own random init), for the
comparison report. The measurement is `transferlab.diagnostics.weights` (the one `diagnose drift` uses)."""
from __future__ import annotations

import logging
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
    starting value, of the run's effective weights (LoRA merged; adapter runs: None and a note)."""
    from transferlab.diagnostics.weights import run_weight_change
    from transferlab.models import create_model
    from transferlab.runs import load_run_model

    config, model, strategy = load_run_model(run_dir)  # the weights alone: no data is read
    names = [g.name for g in model.depth_groups]
    with torch.random.fork_rng(devices=[]):
        start = create_model(config.model, len(config.classes), weights=config.weights)
    change, note = run_weight_change(config, model, start, strategy)
    return WeightChange(names, change, note)
