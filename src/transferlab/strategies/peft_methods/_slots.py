"""What every PEFT method and the task-module format share: the default slot's name, parameter names without
peft's wrapping, and copies of BatchNorm statistics. Below every method module: it imports none of them (only the registry of their facts)."""
from __future__ import annotations

import torch
from torch import nn

from transferlab.nn_utils import is_batchnorm


DEFAULT_SLOT = "default"


def plain_name(name: str) -> str:
    """A parameter's name in the unmodified model: without the fragments a method inserts into the names of the
    layers it wraps (its `wrapper_markers`: peft renames a wrapped layer's weight to base_layer.weight)."""
    from transferlab.strategies.peft_methods._registry import wrapper_markers

    for fragment in wrapper_markers():
        name = name.replace(fragment, ".")
    return name


def batchnorm_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every BatchNorm running statistic, by (plain) buffer name."""
    out = {}
    for mod_name, module in model.named_modules():
        if is_batchnorm(module):
            for buf_name, buf in module.named_buffers(recurse=False):
                if buf is not None:
                    out[plain_name(f"{mod_name}.{buf_name}")] = buf.detach().clone()
    return out
