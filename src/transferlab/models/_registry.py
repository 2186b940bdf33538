"""Model registry: named builders and their pretrained configs, and the `registry` model family that answers for
them (see `_families`)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch

from transferlab.errors import ConfigError
from transferlab.models._config import PretrainedCfg
from transferlab.models._families import SCRATCH_DIR, SCRATCH_NONE, SCRATCH_WEIGHTS, ModelFamily, register_family
from transferlab.models.transfer_model import TransferModel

logger = logging.getLogger(__name__)

Builder = Callable[..., TransferModel]
_BUILDERS: dict[str, Builder] = {}
_CONFIGS: dict[str, PretrainedCfg] = {}  # also holds the configs of register_module's names (list_models)
# Per registry name, optional: how its random-init copy is made, and its tokenizer (see register_model)
_RANDOM_STATE: dict[str, Callable[[int], dict[str, torch.Tensor]]] = {}
_RANDOM_DIR: dict[str, Callable[[int, Path], None]] = {}
_TOKENIZER: dict[str, Callable[[], str]] = {}


def register_model(cfg: PretrainedCfg, *, random_state: Callable[[int], dict] | None = None,
                   random_dir: Callable[[int, Path], None] | None = None,
                   tokenizer: Callable[[], str] | None = None) -> Callable[[Builder], Builder]:
    """Register `builder(num_classes, weights=None, head="linear") -> TransferModel` under `cfg.name`.

    Optional, for a comparison's from-scratch baseline: `random_state(seed)`, random weights of the model's
    architecture as a state dict its builder loads as `weights`, or `random_dir(seed, folder)`, which writes a
    model folder with random weights. `tokenizer()`: what a text model's tokenizer is read from."""

    def wrap(fn: Builder) -> Builder:
        _BUILDERS[cfg.name] = fn
        _CONFIGS[cfg.name] = cfg
        for table, value in ((_RANDOM_STATE, random_state), (_RANDOM_DIR, random_dir), (_TOKENIZER, tokenizer)):
            if value is not None:
                table[cfg.name] = value
        return fn

    return wrap


def list_models() -> list[str]:
    """The registry's names and those given to `register_module` in this process."""
    return sorted(_CONFIGS)


def pretrained_cfg(name: str) -> PretrainedCfg:
    if name in _CONFIGS:
        return _CONFIGS[name]
    raise ConfigError(_unknown(name))


def _unknown(name: str) -> str:
    return (f"unknown model {name!r}: choose one of {', '.join(list_models())}, a timm architecture name "
            f"(e.g. resnet18), a folder kept by `transferlab pretrain` (or RUN@EPOCH), a Hugging Face model "
            f"directory, or hf:<hub id>")


@register_family
class RegistryFamily(ModelFamily):
    """The built-in names of `register_model`."""

    name = "registry"
    order = 10

    def claims(self, name: str) -> bool:
        return name in _BUILDERS

    def cfg(self, name: str, weights: str | None = None) -> PretrainedCfg:
        return _CONFIGS[name]

    def build(self, name: str, num_classes: int, weights: str | None = None, head: str = "linear") -> TransferModel:
        return _BUILDERS[name](num_classes=num_classes, weights=weights, head=head)

    def reproducible_start(self, name: str) -> bool:
        return not _CONFIGS[name].weights.startswith("random init")  # resnet10_cifar: random until pre-trained

    def scratch(self, name: str) -> tuple[str, str]:
        cfg = _CONFIGS[name]
        if name in _RANDOM_STATE:
            return SCRATCH_WEIGHTS, f"{name} with random weights of its architecture {cfg.architecture}"
        if name in _RANDOM_DIR:
            return SCRATCH_DIR, f"{name}'s {cfg.architecture.upper()} config with random weights"
        return SCRATCH_NONE, f"no random-init builder is known for registry model {name!r}"

    def random_state(self, name: str, seed: int) -> dict[str, torch.Tensor]:
        return _RANDOM_STATE[name](seed)

    def write_random_dir(self, name: str, seed: int, folder: Path) -> None:
        _RANDOM_DIR[name](seed, folder)

    def tokenizer_source(self, name: str) -> str | None:
        return _TOKENIZER[name]() if name in _TOKENIZER else None
