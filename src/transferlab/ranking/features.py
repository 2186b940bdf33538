"""One forward pass per candidate: its pooled features (or every depth group's), and its source head's softmax.

Features are what the candidate's new head would read, `model.features(batch)` (B, D): the pooled penultimate
features. With `layers`, the pooled output of each backbone depth group instead (`diagnostics._common.GroupOutputs`:
spatial maps mean-pooled over positions, token states over the non-padding tokens), all from the same pass. The
source head (the pre-trained classifier, `model.source_head`, kept by registry models, --weights files with a
classifier and `pretrain` checkpoints) is applied to the same features, so LEEP and NCE cost no second pass.
"""
from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass

import numpy as np
import torch

from transferlab.diagnostics._common import GroupOutputs, make_loader, target_batches

logger = logging.getLogger(__name__)


@dataclass
class Extracted:
    """One candidate's pass over the sampled examples."""

    features: dict[str, np.ndarray]  # "features" (N, D), or per depth group name its pooled output (N, D_g)
    labels: np.ndarray  # (N,) int64, in example order
    source_probs: np.ndarray | None  # (N, S) float64 softmax of the source head; None without one
    forward_seconds: float  # the pass, data reading included
    peak_memory_mb: float  # CUDA: peak allocated during the pass; CPU: the process's peak resident set so far


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@torch.no_grad()
def extract(model, data, dataset, device: torch.device, batch_size: int, layers: bool = False) -> Extracted:
    """Run `model` (eval mode) over `dataset` (a split of the bundle `data`) once, in order."""
    model.eval().to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    groups = [g.name for g in model.depth_groups[:model.num_backbone_groups]]
    hooks = GroupOutputs(model) if layers else None
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in (groups if layers else ["features"])}
    probs, labels = [], []
    head = model.source_head.to(device) if model.source_head is not None and not layers else None
    start = time.perf_counter()
    try:
        for batch in target_batches(make_loader(data, dataset, batch_size), device):
            if layers:
                outputs = hooks.run(model, batch)
                for name, out in zip(groups, outputs):
                    if out is not None:
                        chunks[name].append(out.float().cpu().numpy())  # (B, D_g)
            else:
                f = model.features(batch)  # (B, D)
                chunks["features"].append(f.float().cpu().numpy())
                if head is not None:
                    probs.append(torch.softmax(head(f).double(), dim=1).cpu().numpy())  # (B, S)
            labels.append(batch["labels"].cpu().numpy())
    finally:
        if hooks is not None:
            hooks.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    y = np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, dtype=np.int64)
    features = {name: np.concatenate(c).astype(np.float64) for name, c in chunks.items()
                if c and sum(len(x) for x in c) == len(y)}  # a group that did not run on every batch is left out
    return Extracted(features, y, np.concatenate(probs) if probs else None, seconds, peak_memory_mb(device))
