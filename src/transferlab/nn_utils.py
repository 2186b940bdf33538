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
