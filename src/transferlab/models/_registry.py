"""Model registry: named builders, plus fall-backs for any timm architecture or Hugging Face directory."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from transferlab.errors import ConfigError
from transferlab.models._config import PretrainedCfg
from transferlab.models.heads import DEFAULT_HEAD, parse_head
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
            f"(e.g. resnet18), a Hugging Face model directory, or hf:<hub id>")


def create_model(name: str, num_classes: int, weights: str | None = None, head: str = DEFAULT_HEAD) -> TransferModel:
    """Build a model by registry name, timm architecture name, HF directory or `hf:<hub id>`, with a new head
    built from the head spec `head` (`linear`, `mlp:hidden=256`; see `models.heads`)."""
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    parse_head(head)  # a bad spec fails before any weights load
    if name in _BUILDERS:
        return _BUILDERS[name](num_classes=num_classes, weights=weights, head=head)
    from transferlab.models import hf_models, timm_models  # local: avoid import cycles

    if Path(name).is_dir():
        if weights:
            raise ConfigError("--weights applies to timm architectures; a model directory carries its own")
        return hf_models.from_hf(name, num_classes, head=head)
    if name.startswith("hf:"):
        return hf_models.from_hf(name[3:], num_classes, head=head)
    if timm_models.is_timm_model(name):
        return timm_models.from_timm(name, num_classes, weights=weights, head=head)
    raise ConfigError(_unknown(name))
