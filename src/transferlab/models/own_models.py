"""Your own network as a transferlab model: `register_module(name, build, groups=..., head=...)`.

After the call, `name` is a model name like any other in this process (`create_model`, `RunConfig(model=name)`,
`compare`, `diagnose drift`): every strategy and diagnostic reads the depth groups given here, the same contract
timm and Hugging Face models follow (`TransferModel`). The `module` model family answers for these names.

Limits: the registration lives in this Python process only. A grid's worker processes (`jobs > 1`) are
spawned, and Ray's workers are other processes: neither has it, so `run_grid` refuses both for a registered
module (run the grid with one process), as does a command started with `--nproc` (new processes too). A registered
module has no cut points (`forward_until`/`forward_from`): training is never cached after a frozen prefix, and
it is correct, only slower.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from transferlab.errors import ConfigError
from transferlab.models._config import PretrainedCfg
from transferlab.models._families import SCRATCH_WEIGHTS, ModelFamily, family_of, register_family
from transferlab.models._registry import _CONFIGS
from transferlab.models.heads import DEFAULT_HEAD
from transferlab.models.transfer_model import INPUT_KEYS, DepthGroup, TransferModel, _matches
from transferlab.safe_io import load_state_dict_file

logger = logging.getLogger(__name__)

MODALITIES = tuple(INPUT_KEYS)  # ("image", "vector"): one input tensor; a text model is a Hugging Face folder
_FIXED_FIELDS = ("name", "modality", "architecture", "weights", "num_source_classes", "classifier")

GroupsSpec = Sequence["str | Sequence[str]"] | Mapping[str, "str | Sequence[str]"]


@dataclass(frozen=True)
class ModuleSpec:
    """What `register_module` was given, checked."""

    name: str
    build: Callable[[], nn.Module]
    groups: tuple[tuple[str, tuple[str, ...]], ...]  # (group name or "", its entries), stem first
    head: str | None  # module path of the source classifier, or None: the network outputs features
    feature_dim: int | None
    weights: str | None  # a state-dict file loaded into every build
    cfg: PretrainedCfg


_MODULES: dict[str, ModuleSpec] = {}
_REPRODUCIBLE: dict[str, bool] = {}  # name -> do two builds give the same weights (see reproducible_start)


def register_module(name: str, build: Callable[[], nn.Module], *, groups: GroupsSpec, head: str | None = None,
                    modality: str = "image", feature_dim: int | None = None, weights: str | Path | None = None,
                    **input_cfg) -> PretrainedCfg:
    """Make any `torch.nn.Module` a transferlab model named `name` (in this process); returns its config.

    build: called with no arguments for every new model (each run, the reference of a diagnostic, the grid's
        from-scratch baseline), so it must return a *new* module each time; transferlab seeds the global RNG
        before calling it. It may load the network's pre-trained weights itself, or leave that to `weights`.
    groups: the depth groups from the input (stem) to the top, the head not among them. A list (or a dict
        {group name: entry}); each entry is a module path of the network (`"blocks.0"`), a regex matched at the
        start of parameter names (`r"blocks\\.[01]\\."`), or a list of those. A regex stands for the modules that
        own the parameters it matches. Every parameter outside the head must fall in one group, and every group
        must hold one. Unnamed groups are named by their module path, else `group<i>`. Strategies (freeze:k,
        discriminative, gradual unfreezing) and diagnostics (CKA and weight change per group) read these.
    head: module path of the network's source classifier, an `nn.Linear` called last, on the pooled features:
        transferlab swaps it for an Identity (the network then outputs features (B, D), D = its in_features),
        adds a new head for the target classes, and keeps the old one as `model.source_head` (LwF,
        forgetting) when the start is pre-trained. None: the network already outputs features (B, feature_dim).
    modality: "image" (batches' `pixel_values`, (B, 3, H, W)) or "vector" (`input_values`, (B, F), e.g.
        `--data sklearn:wine`): the network is called on that one tensor.
    feature_dim: the width D of the features; needed when head is None.
    weights: a state-dict file (safetensors, or a weights-only .pth) of the whole network, head included,
        loaded into every build: the pre-trained source. A run's --weights replaces it.
    input_cfg: other PretrainedCfg fields, e.g. input_size=32, mean=(...), std=(...) for images, source_task.

    The name is refused when another model family already claims it (a registry name, a timm architecture, an
    existing path); registering it again replaces the earlier registration. The network is built once here, so
    a wrong group or head fails now, in one line.
    """
    if not isinstance(name, str) or not name.strip() or "/" in name or "@" in name:
        raise ConfigError(f"register_module: the name must be a plain word (no '/' or '@'), got {name!r}")
    owner = family_of(name)
    if owner is not None and owner.name != ModuleFamily.name:
        raise ConfigError(f"register_module: {name!r} is already a {owner.name} model name; choose another name")
    if not callable(build):
        raise ConfigError(f"register_module {name!r}: build must be a function returning an nn.Module, "
                          f"got {type(build).__name__}")
    if modality not in MODALITIES:
        raise ConfigError(f"register_module {name!r}: modality must be one of {', '.join(MODALITIES)}, got "
                          f"{modality!r} (a text model is a Hugging Face folder: --model DIR)")
    if head is None and not (isinstance(feature_dim, int) and feature_dim >= 1):
        raise ConfigError(f"register_module {name!r}: without head= (the network outputs its features), give "
                          f"feature_dim=D, the width of those features")
    unknown = sorted(set(input_cfg) - ({f.name for f in dataclasses.fields(PretrainedCfg)} - set(_FIXED_FIELDS)))
    if unknown:
        raise ConfigError(f"register_module {name!r}: {', '.join(unknown)} are not input config fields "
                          f"(PretrainedCfg, except {', '.join(_FIXED_FIELDS)})")
    if weights is not None and not Path(weights).expanduser().is_file():
        raise ConfigError(f"register_module {name!r}: weights file {weights} not found")
    spec = ModuleSpec(name=name, build=build, groups=_groups_spec(name, groups), head=head,
                      feature_dim=feature_dim, weights=str(Path(weights).expanduser().resolve()) if weights else None,
                      cfg=PretrainedCfg(name=name, modality=modality))
    with torch.random.fork_rng(devices=[]):  # the check leaves the caller's random stream as it was
        module = _new_module(spec)
        if spec.weights:
            _load(spec, module, spec.weights)
        source_classes = _check_head(spec, module).out_features if head else 0
        _detach_head(spec, module)
        depth_groups(spec, module)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in input_cfg.items()}  # mean=[...] as a tuple
    cfg = PretrainedCfg(name=name, modality=modality, architecture=_describe(build),
                        weights=spec.weights or "build() of register_module", num_source_classes=source_classes,
                        classifier=head or "", **fields)
    spec = dataclasses.replace(spec, cfg=cfg)
    _MODULES[name] = spec
    _CONFIGS[name] = cfg  # list_models() and pretrained_cfg() name it
    _REPRODUCIBLE.pop(name, None)
    logger.info("registered module %s: %d depth groups, %s", name, len(spec.groups),
                f"source classifier {head}" if head else f"features of width {feature_dim}")
    return cfg


def _describe(build: Callable) -> str:
    """`module.qualname` of the build function or class (a partial: its function's), for the config."""
    target = getattr(build, "func", build)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(target).__name__)}"


def unregister_module(name: str) -> None:
    """Forget a name given to `register_module` (nothing when it is not one)."""
    if _MODULES.pop(name, None) is not None:
        _CONFIGS.pop(name, None)
        _REPRODUCIBLE.pop(name, None)


def is_registered_module(name: str) -> bool:
    """True for a name given to `register_module` in this process (which other processes do not know)."""
    return name in _MODULES


def _groups_spec(name: str, groups: GroupsSpec) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if isinstance(groups, Mapping):
        items = list(groups.items())
    elif isinstance(groups, (list, tuple)):
        items = [("", g) for g in groups]
    else:
        items = []
    if not items:
        raise ConfigError(f"register_module {name!r}: groups must be a non-empty list (or dict) of module paths "
                          f"or parameter-name regexes, stem first")
    out = []
    for label, entry in items:
        entries = (entry,) if isinstance(entry, str) else tuple(entry) if isinstance(entry, (list, tuple)) else ()
        if not entries or not all(isinstance(e, str) and e for e in entries):
            raise ConfigError(f"register_module {name!r}: group {label or len(out)} must be a module path, a regex "
                              f"or a list of them, got {entry!r}")
        out.append((str(label), entries))
    return tuple(out)


def _new_module(spec: ModuleSpec) -> nn.Module:
    module = spec.build()
    if not isinstance(module, nn.Module):
        raise ConfigError(f"model {spec.name!r}: its build() returned {type(module).__name__}, not an nn.Module")
    return module


def _load(spec: ModuleSpec, module: nn.Module, path: str) -> None:
    """The state dict in `path` into `module` (the whole network, head included); one-line ConfigError when
    it does not fit."""
    state = load_state_dict_file(path)
    own = module.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (the network's is {tuple(own[k].shape)})" for k, v in state.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if wrong or missing or unexpected:
        found = "; ".join(f"{what} {', '.join(names[:3])}" for what, names in (
            ("tensors of another shape:", wrong), ("missing", missing), ("unexpected", unexpected)) if names)
        raise ConfigError(f"weights {path} do not fit model {spec.name!r}: {found}")
    module.load_state_dict(state)


def _check_head(spec: ModuleSpec, module: nn.Module) -> nn.Linear:
    try:
        classifier = module.get_submodule(spec.head)
    except AttributeError:
        raise ConfigError(f"model {spec.name!r}: head={spec.head!r} is no module of the network; its top-level "
                          f"modules are {', '.join(n for n, _ in module.named_children()) or '(none)'}") from None
    if not isinstance(classifier, nn.Linear):
        raise ConfigError(f"model {spec.name!r}: head={spec.head!r} is a {type(classifier).__name__}, not an "
                          f"nn.Linear; name the last Linear layer, or pass head=None and feature_dim=D")
    return classifier


def _detach_head(spec: ModuleSpec, module: nn.Module) -> nn.Linear | None:
    """Replace the source classifier by an Identity (the network then outputs its features); returns a copy."""
    if spec.head is None:
        return None
    classifier = _check_head(spec, module)
    source = nn.Linear(classifier.in_features, classifier.out_features, bias=classifier.bias is not None)
    source.load_state_dict(classifier.state_dict())
    parent, _, child = spec.head.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, child, nn.Identity())
    return source


def depth_groups(spec: ModuleSpec, module: nn.Module) -> list[DepthGroup]:
    """The registered groups as DepthGroups of module paths under `backbone.` (the head already detached);
    ConfigError naming the group when an entry matches nothing, a parameter is in no group or a group is empty."""
    modules = {n for n, _ in module.named_modules() if n}
    params = [n for n, _ in module.named_parameters()]
    groups, from_regex = [], {}  # from_regex: parameter -> the group whose regex matched it
    for i, (label, entries) in enumerate(spec.groups):
        prefixes: list[str] = []
        for entry in entries:
            if entry in modules:
                prefixes.append(entry)
                continue
            try:
                matched = [n for n in params if re.match(entry, n)]
            except re.error as exc:
                raise ConfigError(f"model {spec.name!r}: group {label or i} entry {entry!r} is no module path of "
                                  f"the network and no valid regex ({exc})") from None
            if not matched:
                raise ConfigError(f"model {spec.name!r}: group {label or i} entry {entry!r} is no module path of "
                                  f"the network and matches no parameter name (they look like "
                                  f"{', '.join(params[:4])})")
            for n in matched:
                prefixes.append(n.rpartition(".")[0] or n)  # the module that owns it (a root parameter: itself)
                from_regex[n] = i
        prefixes = list(dict.fromkeys(prefixes))
        group_name = label or (entries[0] if len(entries) == 1 and entries[0] in modules else f"group{i}")
        groups.append(DepthGroup(group_name, tuple(f"backbone.{p}" for p in prefixes)))
    names = [g.name for g in groups]
    if "head" in names or len(set(names)) != len(names):
        raise ConfigError(f"model {spec.name!r}: group names must be distinct and not 'head', got {names}")
    owner = {n: _owner(groups, f"backbone.{n}") for n in params}
    orphans = [n for n, g in owner.items() if g is None]
    if orphans:
        raise ConfigError(f"model {spec.name!r}: parameter(s) {', '.join(orphans[:3])}"
                          f"{' and more' if len(orphans) > 3 else ''} belong to no depth group; every parameter "
                          f"outside the head must be in one of groups")
    split = [n for n, i in from_regex.items() if owner[n] != i]
    if split:
        raise ConfigError(f"model {spec.name!r}: the group regexes split a module's parameters ({split[0]}); a "
                          f"group holds whole modules")
    empty = [g.name for i, g in enumerate(groups) if i not in owner.values()]
    if empty:
        raise ConfigError(f"model {spec.name!r}: depth group(s) {', '.join(empty)} hold no parameter (the head "
                          f"{spec.head!r} is a group of its own, added by transferlab)")
    return groups


def _owner(groups: list[DepthGroup], param: str) -> int | None:
    """The group of `param`: the longest matching prefix wins (TransferModel.group_index's rule)."""
    best, best_len = None, -1
    for i, group in enumerate(groups):
        for prefix in group.prefixes:
            if _matches(param, prefix) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    return best


def reinitialise(module: nn.Module) -> None:
    """Every submodule's own `reset_parameters()` (its default init; BatchNorm also resets its statistics).
    Parameters held by a module without one keep what build() gave them: logged at WARNING."""
    kept = []
    for path, sub in module.named_modules():
        if callable(getattr(sub, "reset_parameters", None)):
            sub.reset_parameters()
        else:
            kept += [f"{path}.{n}" if path else n for n, _ in sub.named_parameters(recurse=False)]
    if kept:
        logger.warning("from-scratch init: %s have no reset_parameters() in their module and keep the values "
                       "build() gave them", ", ".join(kept[:4]) + (" and more" if len(kept) > 4 else ""))


@register_family
class ModuleFamily(ModelFamily):
    """Names given to `register_module` in this process."""

    name = "module"
    order = 0

    def claims(self, name: str) -> bool:
        return name in _MODULES

    def cfg(self, name: str, weights: str | None = None) -> PretrainedCfg:
        cfg = _MODULES[name].cfg
        return dataclasses.replace(cfg, weights=str(weights)) if weights else cfg

    def build(self, name: str, num_classes: int, weights: str | None = None, head: str = DEFAULT_HEAD) \
            -> TransferModel:
        spec = _MODULES[name]
        module = _new_module(spec)
        state_file = weights or spec.weights
        if state_file:
            _load(spec, module, state_file)
        classifier = _detach_head(spec, module)
        feature_dim = classifier.in_features if classifier is not None else spec.feature_dim
        # the source head of a pre-trained start only: a random classifier is no source task's
        source_head = classifier if classifier is not None and (state_file or self.reproducible_start(name)) \
            else None
        return TransferModel(self.cfg(name, weights), module, feature_dim, num_classes, depth_groups(spec, module),
                             source_head=source_head, head=head)

    def reproducible_start(self, name: str) -> bool:
        """With a weights file, yes; else whether two builds under different seeds give the same weights (build()
        loads them itself) or not (a random init), found out once."""
        spec = _MODULES[name]
        if spec.weights:
            return True
        if name not in _REPRODUCIBLE:
            with torch.random.fork_rng(devices=[]):
                states = []
                for seed in (0, 1):
                    torch.manual_seed(seed)
                    states.append(_new_module(spec).state_dict())
            a, b = states
            _REPRODUCIBLE[name] = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        return _REPRODUCIBLE[name]

    def scratch(self, name: str) -> tuple[str, str]:
        return SCRATCH_WEIGHTS, f"{name}: a new build() with every submodule's reset_parameters(), seeded"

    def random_state(self, name: str, seed: int) -> dict[str, torch.Tensor]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = _new_module(_MODULES[name])
            reinitialise(module)
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

