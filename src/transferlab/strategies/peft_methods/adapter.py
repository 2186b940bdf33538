"""Bottleneck adapters, hand-written: `peft` has no Houlsby/Pfeiffer or residual adapters (its "adapter"
methods are LoRA variants, prompt tuning and (IA)^3), so this module implements them.

- Transformers, Houlsby et al. 2019: after the attention output projection and after the feed-forward output
  projection of every layer, h <- h + up(gelu(down(h))), before the residual sum and LayerNorm.
  Pfeiffer et al. 2020: after the feed-forward output projection only.
- CNNs, Rebuffi et al. 2017/2018 (parallel residual adapters): beside every block, a bottleneck of 1x1
  convolutions reading the block's input, y <- block(x) + up(down(x)); the down convolution takes the block's
  stride, the up convolution maps to the block's output width. Linear, as Rebuffi's parallel 1x1 adapters are.

The up projection starts at zero, so the model's output is unchanged before training. Adapters hang off the
host module as `<host>.tl_adapter.<slot>` with a forward hook, so the host's own parameter names (and the
plain checkpoint layout) do not change, and a host module's depth group owns its adapter.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from transferlab.errors import ConfigError
from transferlab.strategies.base import Tunable
from transferlab.strategies.peft_methods._base import PeftStrategy, claim_prefix
from transferlab.strategies.peft_methods._registry import register_method

KINDS = ("auto", "houlsby", "pfeiffer", "parallel")
SEGMENT = "tl_adapter"

# Output projections, relative to one transformer layer (first match wins).
_ATTENTION_OUT = ("attention.output.dense", "attention.out_lin", "self_attn.out_proj", "attention.o_proj",
                  "self_attn.o_proj", "attn.c_proj", "attention.dense", "attn.proj")  # attn.proj: timm ViT
_FFN_OUT = ("output.dense", "ffn.lin2", "mlp.fc2", "fc2", "mlp.c_proj", "mlp.down_proj")


class Bottleneck(nn.Module):
    """h -> up(act(down(h))) on the last dimension; up starts at zero. (B, T, H) -> (B, T, H)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.down = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(h)))


class ParallelConvAdapter(nn.Module):
    """x (B, C_in, H, W) -> (B, C_out, H/s, W/s): 1x1 conv down (stride s), 1x1 conv up, up starts at zero."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, stride: int):
        super().__init__()
        self.down = nn.Conv2d(in_channels, hidden, kernel_size=1, stride=stride, bias=False)
        self.up = nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


def _serial_hook(module, inputs, output):
    slot = getattr(module, "tl_active", None)
    if slot is None or slot not in module.tl_adapter:
        return output
    return output + module.tl_adapter[slot](output)


def _parallel_hook(module, inputs, output):
    slot = getattr(module, "tl_active", None)
    if slot is None or slot not in module.tl_adapter:
        return output
    return output + module.tl_adapter[slot](inputs[0])


@register_method
class Adapter(PeftStrategy):
    method = "adapter"
    name = "adapter"
    new_segments = (SEGMENT,)
    markers = (f".{SEGMENT}.",)
    mergeable = False  # a bottleneck is a new layer: merge_slot says why
    help = ("Bottleneck adapters with a zero-initialised up projection (the output is unchanged before "
            "training): Houlsby (after attention and feed-forward) or Pfeiffer (after feed-forward) for "
            "transformers, parallel residual 1x1-conv adapters beside each block for CNNs (Rebuffi et al.). "
            "Only adapters and the new head train.")

    @dataclass
    class Params:
        reduction: int = field(default=16, metadata={
            "help": "bottleneck width = host width / reduction (at least 4)"})
        kind: str = field(default="auto", metadata={
            "help": "auto (houlsby for transformers, parallel for CNNs), houlsby, pfeiffer or parallel"})

        def __post_init__(self):
            if self.reduction < 1:
                raise ValueError(f"reduction must be >= 1, got {self.reduction}")
            if self.kind not in KINDS:
                raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")


    @classmethod
    def search_space(cls, ctx):
        return {"reduction": Tunable(choices=(8, 16, 32))}
    def resolved_kind(self, model) -> str:
        """auto: Houlsby adapters in a transformer's layers (text models, timm ViTs), parallel residual
        adapters beside a CNN's blocks."""
        kind = self.params.kind
        transformer = transformer_layers(model) is not None
        if kind == "auto":
            return "houlsby" if transformer else "parallel"
        if (kind == "parallel") == transformer:
            raise ConfigError(f"adapter:kind={kind} does not apply to {model.cfg.name} "
                              f"({'a transformer' if transformer else 'a CNN'}): use "
                              f"{'houlsby or pfeiffer' if transformer else 'parallel'}")
        return kind

    # ---- structure ---------------------------------------------------------------------------
    def sites(self, model) -> list[str]:
        """Backbone module paths that host an adapter."""
        kind = self.resolved_kind(model)
        if kind == "parallel":
            return _cnn_blocks(model.backbone)
        layers_name, layers = transformer_layers(model)
        modules = dict(model.backbone.named_modules())
        sites = []
        for i in range(len(layers)):
            wanted = (_ATTENTION_OUT, _FFN_OUT) if kind == "houlsby" else (_FFN_OUT,)
            for candidates in wanted:
                found = next((f"{layers_name}.{i}.{c}" for c in candidates
                              if isinstance(modules.get(f"{layers_name}.{i}.{c}"), nn.Linear)), None)
                if found is None:
                    raise ConfigError(f"adapter: cannot find the output projections of layer {i} of "
                                      f"{model.cfg.name} (looked for {', '.join(candidates)})")
                sites.append(found)
        return sites

    def add_slot(self, model, slot):
        super().add_slot(model, slot)
        kind = self.resolved_kind(model)
        sites = self.sites(model)
        shapes = _block_shapes(model, sites) if kind == "parallel" else {}
        with torch.random.fork_rng(devices=[]):  # init from the run's seeded stream, as for LoRA
            for site in sites:
                host = model.backbone.get_submodule(site)
                if not hasattr(host, SEGMENT):
                    host.add_module(SEGMENT, nn.ModuleDict())
                    host.tl_active = None
                    host.register_forward_hook(_parallel_hook if kind == "parallel" else _serial_hook)
                    claim_prefix(model, f"backbone.{site}.{SEGMENT}")
                if slot in host.tl_adapter:
                    continue
                if kind == "parallel":
                    c_in, c_out, stride = shapes[site]
                    module = ParallelConvAdapter(c_in, c_out, max(4, c_out // self.params.reduction), stride)
                else:
                    width = host.out_features
                    module = Bottleneck(width, max(4, width // self.params.reduction))
                host.tl_adapter[slot] = module.to(host.weight.device if hasattr(host, "weight")
                                                  else next(host.parameters()).device)

    def slot_parameter_names(self, model, slot):
        mark = f".{SEGMENT}.{slot}."
        return {n for n, _ in model.named_parameters() if mark in n}

    @classmethod
    def set_active(cls, model, slot):
        for module in model.backbone.modules():
            if hasattr(module, SEGMENT):
                module.tl_active = slot

    def structure(self, model):
        return {"kind": self.resolved_kind(model), "reduction": self.params.reduction,
                "sites": self.sites(model)}

    # ---- task module -------------------------------------------------------------------------
    def save_slot(self, model, slot, directory):
        mark = f".{SEGMENT}.{slot}."
        return {n.replace(mark, f".{SEGMENT}."): p.detach() for n, p in model.named_parameters() if mark in n}

    def load_slot(self, model, slot, directory, tensors):
        mark = f".{SEGMENT}.{slot}."
        params = dict(model.named_parameters())
        expected = {n.replace(mark, f".{SEGMENT}."): n for n in self.slot_parameter_names(model, slot)}
        saved = {k for k in tensors if f".{SEGMENT}." in k}
        if saved != set(expected):
            raise ConfigError(f"{directory}: adapter weights do not fit the model (missing "
                              f"{sorted(set(expected) - saved)[:3]}, unexpected {sorted(saved - set(expected))[:3]})")
        with torch.no_grad():
            for key, name in expected.items():
                if params[name].shape != tensors[key].shape:
                    raise ConfigError(f"{directory}: {key} has shape {tuple(tensors[key].shape)}, the model "
                                      f"expects {tuple(params[name].shape)}")
                params[name].copy_(tensors[key])
        return {}

    def merge_slot(self, model, slot):
        raise ConfigError("adapter modules cannot be merged into the base weights: a bottleneck adapter is a "
                          "new layer (with a non-linearity for transformers); attach it with "
                          "transferlab.modules.MultiTaskModel, or use lora or bitfit for mergeable modules")


def transformer_layers(model) -> tuple[str, nn.Module] | None:
    """(path, the stack of transformer layers) of a text model or a timm ViT (`blocks` of attention blocks);
    None for a CNN."""
    if model.cfg.modality == "text":
        from transferlab.models.hf_models import _layer_list

        return _layer_list(model.backbone)
    blocks = getattr(model.backbone, "blocks", None)
    if isinstance(blocks, nn.Sequential) and len(blocks) and all(hasattr(b, "attn") and hasattr(b, "mlp")
                                                                    for b in blocks):
        return "blocks", blocks
    return None


def _cnn_blocks(backbone: nn.Module) -> list[str]:
    """The residual blocks of a CNN: `blocks.i.j` (timm EfficientNet/MobileNet) or `layerN.j` (ResNet)."""
    stages = []
    if isinstance(getattr(backbone, "blocks", None), nn.Sequential):
        stages = [(f"blocks.{i}", s) for i, s in enumerate(backbone.blocks)]
    elif isinstance(getattr(backbone, "stages", None), nn.Sequential):  # ConvNeXt, ResNetV2, ...
        for i, stage in enumerate(backbone.stages):
            blocks = getattr(stage, "blocks", None)
            stages.append((f"stages.{i}.blocks", blocks) if isinstance(blocks, nn.Sequential)
                          else (f"stages.{i}", stage))
    else:
        stages = [(n, m) for n, m in backbone.named_children() if n.startswith("layer") and
                  isinstance(m, nn.Sequential)]
    sites = []
    for prefix, stage in stages:
        if isinstance(stage, nn.Sequential):
            sites += [f"{prefix}.{j}" for j in range(len(stage))]
        else:
            sites.append(prefix)
    if not sites:
        raise ConfigError("adapter: cannot find the blocks of this CNN (expected blocks.i.j, stages.i or layerN)")
    return sites


@torch.no_grad()
def _block_shapes(model, sites: list[str], size: int = 64) -> dict[str, tuple[int, int, int]]:
    """(in channels, out channels, stride) per block, from one forward pass on a blank image in eval mode
    (so no BatchNorm statistic moves)."""
    shapes: dict[str, tuple[int, int, int]] = {}
    handles = []
    for site in sites:
        def record(module, inputs, output, site=site):
            x = inputs[0]
            stride = max(1, round(x.shape[-1] / output.shape[-1]))
            shapes[site] = (x.shape[1], output.shape[1], stride)
        handles.append(model.backbone.get_submodule(site).register_forward_hook(record))
    was_training = model.backbone.training
    device = next(model.backbone.parameters()).device
    try:
        model.backbone.eval()
        model.backbone(torch.zeros(1, 3, size, size, device=device))
    finally:
        for h in handles:
            h.remove()
        model.backbone.train(was_training)
    return shapes
