"""create_model: a registry name, a folder kept by `pretrain` (or RUN@E), any timm architecture, a Hugging Face
directory or `hf:<hub id>`."""
from __future__ import annotations

from pathlib import Path

from transferlab.errors import ConfigError
from transferlab.models import hf_models, pretrained_dir, timm_models
from transferlab.models._config import PretrainedCfg
from transferlab.models._registry import _BUILDERS, _CONFIGS, _unknown
from transferlab.models.heads import DEFAULT_HEAD, parse_head
from transferlab.models.transfer_model import TransferModel


def create_model(name: str, num_classes: int, weights: str | None = None, head: str = DEFAULT_HEAD) -> TransferModel:
    """Build a model by registry name, timm architecture name, HF directory or `hf:<hub id>`, with a new head
    built from the head spec `head` (`linear`, `mlp:hidden=256`; see `models.heads`)."""
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    parse_head(head)  # a bad spec fails before any weights load
    if name in _BUILDERS:
        return _BUILDERS[name](num_classes=num_classes, weights=weights, head=head)
    folder = pretrained_dir.resolve(name)
    if folder is not None:  # kept by `transferlab pretrain`
        return pretrained_dir.build_from_folder(folder, num_classes, weights=weights, head=head)
    if Path(name).is_dir():
        if weights:
            raise ConfigError("--weights applies to timm architectures; a model directory carries its own")
        return hf_models.from_hf(name, num_classes, head=head)
    if name.startswith("hf:"):
        return hf_models.from_hf(name[3:], num_classes, head=head)
    if timm_models.is_timm_model(name):
        return timm_models.from_timm(name, num_classes, weights=weights, head=head)
    raise ConfigError(_unknown(name))


def model_cfg(name: str, weights: str | None = None) -> PretrainedCfg:
    """The input config `create_model(name, ...)` would carry (input size, normalisation, modality), without
    building the model or reading its weights: what a run needs to read its data first."""
    if name in _CONFIGS:
        return _CONFIGS[name]
    folder = pretrained_dir.resolve(name)
    if folder is not None:
        return pretrained_dir.folder_cfg(folder)
    if Path(name).is_dir():
        return hf_models.hf_cfg(name)
    if name.startswith("hf:"):
        return hf_models.hf_cfg(name[3:])
    if timm_models.is_timm_model(name):
        return timm_models.timm_cfg(name, weights)
    raise ConfigError(_unknown(name))


def check_input_size(model: str, weights: str | None, image_size: int | None) -> None:
    """ConfigError (one line, before anything is written) when --image-size is not the fixed input size of the
    model's architecture. Refused rather than rebuilt at the new size (timm's img_size=): a ViT's position
    embeddings in --weights or a pretrained folder would no longer fit, and resampling them changes the model."""
    if image_size is None:
        return
    try:
        arch = model_cfg(model, weights).architecture
    except Exception:  # noqa: BLE001  (a model that cannot be read is reported by the command itself, in one line)
        return
    fixed = timm_models.fixed_input_size(arch) if arch else None
    if fixed is not None and fixed != image_size:
        raise ConfigError(f"--image-size {image_size}: {model} ({arch}) takes only {fixed} x {fixed} px inputs "
                          f"(a fixed patch grid); use --image-size {fixed}, or a model that takes any size")
