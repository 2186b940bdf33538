"""Model families: which kind of model a name is, asked in one place.

A *family* is one kind of model name (a registry name, a folder kept by `pretrain`, a Hugging Face directory or
`hf:<id>`, a timm architecture, a module registered with `register_module`) and answers, for a name it claims,
everything the rest of the package asks about a model before or without building it: its input config
(`cfg`), the model (`build`), whether building it again gives the start a run had (`reproducible_start`), how to
make a random-init copy for a comparison's from-scratch baseline (`scratch` with `random_state` or
`write_random_dir`), its tokenizer (`tokenizer_source`) and the path it reads (`path`).

Families are asked in their `order`, lowest first; the first whose `claims(name)` is true answers:

    order  family       file                     claims
    0      module       models/own_models.py     a name given to register_module (this process only)
    10     registry     models/_registry.py      a built-in name (efficientnet_lite0, minilm_l6, resnet10_cifar)
    20     pretrained   models/pretrained_dir.py a folder kept by `transferlab pretrain`, or RUN@EPOCH
    30     huggingface  models/hf_models.py      an existing directory, or hf:<hub id>
    40     timm         models/timm_models.py    any timm architecture name

A new family is one class in one file: subclass `ModelFamily`, decorate it with `@register_family`, and import
the file from `models/_factory.py` (so that it registers before the first name is looked up).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from transferlab.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from transferlab.models._config import PretrainedCfg
    from transferlab.models.transfer_model import TransferModel

# How a comparison builds its from-scratch baseline for a family's model (`ModelFamily.scratch`):
SCRATCH_WEIGHTS = "weights"  # a state-dict file of random weights, given as the run's --weights
SCRATCH_DIR = "hf_dir"  # a model folder with random weights, given as the run's --model
SCRATCH_NONE = "none"  # not possible


class ModelFamily:
    """One kind of model name. Subclasses set `name` and `order` and implement `claims`, `cfg` and `build`; the
    other answers have defaults that suit a family of ready pre-trained models without a random-init builder."""

    name: str = ""
    order: int = 100  # families are asked lowest first

    def claims(self, name: str) -> bool:
        """True when `name` is this family's (may raise ConfigError for a name that is clearly meant as one of
        its own but is broken, e.g. RUN@7 of a run that kept no epoch 7)."""
        raise NotImplementedError

    def cfg(self, name: str, weights: str | None = None) -> "PretrainedCfg":
        """The input config `build` would give the model (modality, input size, normalisation), without building
        it or reading its weights."""
        raise NotImplementedError

    def build(self, name: str, num_classes: int, weights: str | None = None, head: str = "linear") \
            -> "TransferModel":
        """The model with a new head (the head spec `head`) for `num_classes` classes; `weights` (a state-dict
        file) replaces its own pre-trained weights where the family takes them."""
        raise NotImplementedError

    def reproducible_start(self, name: str) -> bool:
        """Whether building `name` again (without --weights) gives the backbone a run of it started from: false
        for a random init, which is a new draw on every build (drift then has no meaningful reference)."""
        return True

    def scratch(self, name: str) -> tuple[str, str]:
        """(SCRATCH_WEIGHTS | SCRATCH_DIR | SCRATCH_NONE, a reason for the log or the refusal): how a comparison
        builds `name`'s architecture with random weights."""
        return SCRATCH_NONE, f"no random-init builder is known for {self.name} model {name!r}"

    def random_state(self, name: str, seed: int) -> "dict[str, torch.Tensor]":
        """For SCRATCH_WEIGHTS: random weights of the architecture, drawn from `seed` alone, as a state dict that
        `build(name, ..., weights=FILE)` loads."""
        raise NotImplementedError

    def write_random_dir(self, name: str, seed: int, folder: Path) -> None:
        """For SCRATCH_DIR: a model folder (complete, or none) with random weights drawn from `seed` alone."""
        raise NotImplementedError

    def tokenizer_source(self, name: str) -> str | None:
        """What `AutoTokenizer.from_pretrained` reads for a text model; None for other modalities."""
        return None

    def path(self, name: str) -> Path | None:
        """The file or folder the model is read from (an output must not be inside it); None when not a path."""
        return None


_FAMILIES: list[ModelFamily] = []


def register_family(cls: type[ModelFamily]) -> type[ModelFamily]:
    """Class decorator: add one instance of a ModelFamily subclass, kept in `order` (a family of the same name
    replaces the earlier one)."""
    family = cls()
    if not family.name:
        raise ValueError(f"{cls.__name__}: a model family needs a name")
    _FAMILIES[:] = sorted([f for f in _FAMILIES if f.name != family.name] + [family], key=lambda f: f.order)
    return cls


def unregister_family(name: str) -> None:
    """Remove the family called `name` (nothing when there is none): what a test registered."""
    _FAMILIES[:] = [f for f in _FAMILIES if f.name != name]


def list_families() -> list[ModelFamily]:
    """The families in the order they are asked."""
    return list(_FAMILIES)


def family_of(name: str) -> ModelFamily | None:
    """The first family (in order) that claims `name`, or None; a family's ConfigError for a broken name of its
    own passes through."""
    return next((f for f in _FAMILIES if f.claims(name)), None)


def find_family(name: str, unknown: Callable[[str], str]) -> ModelFamily:
    """family_of(name), or ConfigError(unknown(name)) when no family claims it."""
    family = family_of(name)
    if family is None:
        raise ConfigError(unknown(name))
    return family


def model_path(name: str) -> Path | None:
    """The path a model name reads (a pre-trained folder, a model directory), or None. A name no family claims
    but that exists on disk counts as a path too (a run of it fails later; its output must still not be there)."""
    family = family_of(name)
    if family is not None:
        return family.path(name)
    path = Path(name).expanduser()
    return path if path.exists() else None


def tokenizer_source(name: str) -> str | None:
    """What the tokenizer of a text model is read from (see ModelFamily.tokenizer_source)."""
    family = family_of(name)
    return family.tokenizer_source(name) if family is not None else None


def reproducible_start(name: str) -> bool:
    """ModelFamily.reproducible_start; true for a name no family claims, or one it calls broken (no run of it
    exists to be random)."""
    try:
        family = family_of(name)
    except ConfigError:
        return True
    return family.reproducible_start(name) if family is not None else True
