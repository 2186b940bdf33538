"""Small facts about torch modules and batches that several layers (strategies, training, diagnostics) need."""
from __future__ import annotations

import torch
from torch import nn


def to_device(batch: dict, device) -> dict:
    """A batch dict with its tensors (also those of nested dicts) on `device`; other values as they are."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor)
            else to_device(v, device) if isinstance(v, dict) else v for k, v in batch.items()}


def is_batchnorm(module: nn.Module) -> bool:
    """True for every BatchNorm variant (1d/2d/3d, SyncBatchNorm, lazy ones): torch's `_BatchNorm` family."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def pool_output(output, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """A module output as (B, D), keeping the graph: spatial maps (B, C, H, W) and token states (B, T, H) are
    mean-pooled (token states over the non-padding tokens); tuples (transformer layers) give their first tensor."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    elif not isinstance(output, torch.Tensor) and hasattr(output, "last_hidden_state"):
        output = output.last_hidden_state
    x = output
    if x.dim() == 4:  # (B, C, H, W)
        return x.mean(dim=(2, 3))
    if x.dim() == 3:  # (B, T, H)
        if attention_mask is not None and attention_mask.shape[:2] == x.shape[:2]:
            m = attention_mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
            return (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return x.mean(1)
    return x.reshape(x.shape[0], -1)
