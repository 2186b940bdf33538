"""Training settings: one dataclass, every field with a default and a help text (the CLI reads them)."""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields

from transferlab.errors import ConfigError
from transferlab.training.precision import MEMORY_FORMATS, PRECISIONS

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "linear", "constant")
BN_STATS = ("auto", "frozen")
MAX_SEED = 2**32 - 1  # numpy's and torch's generators both take it; seed * 100_003 + epoch stays in int64
# Far above any useful rate, and far below where float32 optimiser arithmetic overflows (AdamW's step size is
# lr / (1 - beta1^t), up to 10 lr): a larger value only ever gave an overflow inside the optimiser.
MAX_LR = 1e9
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d{1,3})?")


@dataclass
class TrainConfig:
    epochs: int = field(default=5, metadata={"help": "training epochs"})
    lr: float = field(default=1e-3, metadata={"help": "base learning rate: the new head's; strategies scale "
                                                        "the other depth groups from it"})
    batch_size: int = field(default=32, metadata={"help": "training batch size"})
    eval_batch_size: int = field(default=64, metadata={"help": "evaluation batch size"})
    optimizer: str = field(default="adamw", metadata={"help": "adamw or sgd (momentum 0.9, nesterov)"})
    weight_decay: float = field(default=0.01, metadata={"help": "decoupled weight decay (not on biases/norms)"})
    schedule: str = field(default="cosine", metadata={"help": "cosine, linear or constant after warm-up"})
    warmup: float = field(default=0.1, metadata={"help": "fraction of all steps spent warming up linearly"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm (0 turns clipping off)"})
    patience: int = field(default=0, metadata={"help": "early stopping after this many epochs without a "
                                                       "better validation accuracy (0: never)"})
    seed: int = field(default=0, metadata={"help": "seed for initialisation, shuffling, augmentation"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu, cuda, cuda:N"})
    head_init: str = field(default="random", metadata={
        "help": "random, or source: start the head from the related source classifier rows (Co-Tuning)"})
    on_nonfinite: str = field(default="stop", metadata={
        "help": "stop: end the run at a NaN/inf loss naming the step; skip: skip that step and go on"})
    workers: int = field(default=0, metadata={
        "help": "DataLoader worker processes that read and augment examples (0: in the training process); "
                "results do not depend on it"})
    checkpoint_every_steps: int = field(default=0, metadata={
        "help": "also checkpoint every N optimiser steps inside an epoch, so --resume continues mid-epoch "
                "(0: at epoch ends only)"})
    bn_stats: str = field(default="auto", metadata={
        "help": "auto: BatchNorm layers whose parameters are frozen keep their running statistics, the others "
                "re-estimate them on target batches; frozen: every BatchNorm layer keeps the pre-trained "
                "statistics (inference mode) even while its weights train"})
    precision: str = field(default="fp32", metadata={
        "help": "fp32, bf16 (autocast on CPU and CUDA: faster where the CPU has AMX or AVX-512 BF16) or fp16 "
                "(CUDA, with loss scaling); weights and optimiser stay float32"})
    memory_format: str = field(default="auto", metadata={
        "help": "auto (channels_last for convolutional image models), channels_last or contiguous"})
    sync_bn: bool = field(default=False, metadata={
        "help": "in a distributed CUDA run, normalise BatchNorm layers that train with the statistics of the "
                "global batch (torch's SyncBatchNorm; CUDA only)"})
    cache: bool = field(default=True, metadata={
        "help": "compute what frozen leading depth groups output once per split, not every epoch (on where it "
                "applies: frozen prefix, inputs not augmented; results as without it); --no-cache turns it off"})
    cache_memory_mb: int = field(default=2048, metadata={
        "help": "memory the frozen-prefix cache may hold, in MiB (larger entries go to --cache-dir, or are not "
                "cached without one)"})
    cache_dir: str = field(default="", metadata={
        "help": "a folder where frozen-prefix cache entries are also kept as safetensors files, keyed by content: "
                "reused by later runs and by entries too large for memory (default: memory only)"})

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            expected = type(f.default)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                continue
            if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
                raise ConfigError(f"--{f.name.replace('_', '-')} must be a {expected.__name__}, got {value!r}")
            if expected is float and not math.isfinite(value):
                raise ConfigError(f"--{f.name.replace('_', '-')} must be a finite number, got {value}")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if not 0 < self.lr <= MAX_LR:
            raise ConfigError(f"--lr must be a positive number up to {MAX_LR:g}, got {self.lr}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"--seed must be an integer from 0 to {MAX_SEED}, got {self.seed}")
        if not _DEVICE.fullmatch(self.device):
            raise ConfigError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        for name in ("batch_size", "eval_batch_size"):  # each message names the option that was given
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}: choose {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}: choose {', '.join(SCHEDULES)}")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"--warmup must be in [0, 1), got {self.warmup}")
        if self.workers < 0 or self.checkpoint_every_steps < 0:
            raise ConfigError("--workers and --checkpoint-every-steps must be >= 0")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.patience < 0:
            raise ConfigError("--weight-decay, --grad-clip and --patience must be >= 0")
        if self.head_init not in ("random", "source"):
            raise ConfigError(f"--head-init must be random or source, got {self.head_init!r}")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"--on-nonfinite must be stop or skip, got {self.on_nonfinite!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.memory_format not in MEMORY_FORMATS:
            raise ConfigError(f"--memory-format must be one of {', '.join(MEMORY_FORMATS)}, "
                              f"got {self.memory_format!r}")
        if self.cache_memory_mb < 0:
            raise ConfigError("--cache-memory-mb must be >= 0")
        if self.bn_stats not in BN_STATS:
            raise ConfigError(f"--bn-stats must be {' or '.join(BN_STATS)}, got {self.bn_stats!r}")

    def to_dict(self) -> dict:
        return asdict(self)
