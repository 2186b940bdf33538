"""Model registry: named builders and their pretrained configs (`create_model` in `_factory` adds the fall-backs)."""
from __future__ import annotations

import logging
from typing import Callable

from transferlab.errors import ConfigError
from transferlab.models._config import PretrainedCfg
from transferlab.models.transfer_model import TransferModel

logger = logging.getLogger(__name__)

Builder = Callable[..., TransferModel]
_BUILDERS: dict[str, Builder] = {}
_CONFIGS: dict[str, PretrainedCfg] = {}


def register_model(cfg: PretrainedCfg) -> Callable[[Builder], Builder]:
    """Register `builder(num_classes, weights=None, head="linear") -> TransferModel` under `cfg.name`."""

    def wrap(fn: Builder) -> Builder:
        _BUILDERS[cfg.name] = fn
        _CONFIGS[cfg.name] = cfg
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_BUILDERS)


def pretrained_cfg(name: str) -> PretrainedCfg:
    if name in _CONFIGS:
        return _CONFIGS[name]
    raise ConfigError(_unknown(name))


def _unknown(name: str) -> str:
    return (f"unknown model {name!r}: choose one of {', '.join(list_models())}, a timm architecture name "
            f"(e.g. resnet18), a folder kept by `transferlab pretrain` (or RUN@EPOCH), a Hugging Face model "
            f"directory, or hf:<hub id>")
