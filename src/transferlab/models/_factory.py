"""create_model and model_cfg: a model name, answered by the first model family that claims it (`_families`):
a module given to `register_module`, a registry name, a folder kept by `pretrain` (or RUN@E), a Hugging Face
directory or `hf:<hub id>`, any timm architecture."""
from __future__ import annotations

from transferlab.errors import ConfigError
# imported for their families (and registry entries): each registers itself
from transferlab.models import hf_models, own_models, pretrained_dir, timm_models  # noqa: F401
from transferlab.models._config import PretrainedCfg
from transferlab.models._families import find_family
from transferlab.models._registry import _unknown
from transferlab.models.heads import DEFAULT_HEAD, parse_head
from transferlab.models.transfer_model import TransferModel


def create_model(name: str, num_classes: int, weights: str | None = None, head: str = DEFAULT_HEAD) -> TransferModel:
    """Build a model by name (see `_families` for the kinds of names and their order), with a new head built from
    the head spec `head` (`linear`, `mlp:hidden=256`; see `models.heads`)."""
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    parse_head(head)  # a bad spec fails before any weights load
    return find_family(name, _unknown).build(name, num_classes, weights=weights, head=head)


def model_cfg(name: str, weights: str | None = None) -> PretrainedCfg:
    """The input config `create_model(name, ...)` would carry (input size, normalisation, modality), without
    building the model or reading its weights: what a run needs to read its data first."""
    return find_family(name, _unknown).cfg(name, weights)


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
