"""Numeric precision and memory layout of a run: autocast (bf16 on CPU and CUDA, fp16 with loss scaling on
CUDA) and channels-last for convolutional networks. Master weights and the optimiser stay in float32."""
from __future__ import annotations

import logging
from contextlib import nullcontext

import torch
from torch import nn

from transferlab.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")

logger = logging.getLogger(__name__)


class Precision:
    """`autocast()` for forward passes, and for fp16 the gradient scaler the optimiser step goes through."""

    def __init__(self, name: str, device: torch.device):
        if name not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
        if name == "fp16" and device.type != "cuda":
            raise ConfigError("--precision fp16 needs a CUDA device (fp16 on a CPU is slow and needs loss scaling "
                              "it cannot use); on a CPU use bf16")
        self.name, self.device = name, device
        self.scaler = torch.amp.GradScaler("cuda") if name == "fp16" else None
        if name == "bf16" and device.type == "cpu" and not native_cpu_bf16():
            logger.warning("--precision bf16: this CPU (%s) has no bfloat16 matrix instructions (AVX512-BF16 or "
                           "AMX), so bf16 is emulated and far slower than fp32 (benchmarks/speed.py measures a matrix "
                           "product in both); use fp32 here",
                           torch.backends.cpu.get_cpu_capability())

    @property
    def dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    def autocast(self):
        if self.name == "fp32":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def native_cpu_bf16() -> bool:
    """True when oneDNN runs bfloat16 matrix products natively on this CPU (AVX512-BF16 or AMX), the check
    PyTorch itself makes before choosing its bf16 kernels."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def has_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def use_channels_last(memory_format: str, model: nn.Module) -> bool:
    """auto: channels-last for image models with 2-D convolutions (oneDNN and cuDNN run them faster in NHWC)."""
    if memory_format not in MEMORY_FORMATS:
        raise ConfigError(f"--memory-format must be one of {', '.join(MEMORY_FORMATS)}, got {memory_format!r}")
    if memory_format == "auto":
        return getattr(getattr(model, "cfg", None), "modality", "image") == "image" and has_convolutions(model)
    return memory_format == "channels_last"


def to_channels_last(batch: dict) -> dict:
    """A batch whose (B, 3, H, W) "pixel_values" are laid out channels-last; other entries as they are."""
    pixels = batch.get("pixel_values")
    if pixels is None or pixels.dim() != 4:
        return batch
    return {**batch, "pixel_values": pixels.contiguous(memory_format=torch.channels_last)}
