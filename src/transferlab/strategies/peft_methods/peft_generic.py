"""`peft:<type>[:key=value,...]`: any of peft's layer-wrapping methods, configured through peft's own config class.

    peft:ia3    peft:loha:r=8    peft:lokr    peft:lora:use_dora=true (Linear only)    peft:lora:use_rslora=true
    peft:oft    peft:boft        peft:hra     peft:fourierft (Linear only)

The key=values are fields of the type's peft config dataclass (LoHaConfig, ...), each converted by its annotated
type; `target_modules` (a regex matched at the end of backbone module paths, names separated by |) defaults to
transferlab's rule (`_targets.py`: what pays on CNNs, the attention projections on transformers). Like `lora`,
peft's `inject_adapter_in_model` wraps each target in place, so the added parameters stay under the wrapped
layer's path (`backbone.<layer>.hada_w1_a.default`) and in its depth group, and the task module is written in
peft's own format (adapter_config.json + adapter_model.safetensors) for the plain backbone:
`PeftModel.from_pretrained(backbone, DIR)` loads it. Every type here merges (peft's `merge`).

Not here, each refused in one line with its reason: prompt-learning types (they add virtual tokens to a
transformer's input, not layers), types that keep state shared across layers on peft's tuner model (vera,
vblora: `inject_adapter_in_model` refuses them), adalora (its rank allocator must be stepped by the training
loop), and the other types, not wired up and tested here.
"""
from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from transferlab.errors import ConfigError
from transferlab.safe_io import atomic_write_json, load_tensors, save_tensors
from transferlab.specs import convert_value
from transferlab.strategies.peft_methods._base import PeftStrategy
from transferlab.strategies.peft_methods._peft_format import PEFT_CONFIG, PEFT_PREFIX as _PEFT_PREFIX, \
    PEFT_WEIGHTS, load_peft_slot, merge_peft_slot
from transferlab.strategies.peft_methods._registry import register_method
from transferlab.strategies.peft_methods._targets import choose_targets


# type -> (peft type name, the names of the layers it adds: adapter_layer_names of its peft layer class)
TYPES = {
    "lora": ("LORA", ("lora_A", "lora_B", "lora_magnitude_vector")),
    "ia3": ("IA3", ("ia3_l",)),
    "loha": ("LOHA", ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")),
    "lokr": ("LOKR", ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")),
    "oft": ("OFT", ("oft_R",)),
    "boft": ("BOFT", ("boft_R", "boft_s")),
    "hra": ("HRA", ("hra_u",)),
    "fourierft": ("FOURIERFT", ("fourierft_spectrum",)),
}
_REFUSED = {
    "adalora": "its rank allocator (AdaLoraModel.update_and_allocate) must be stepped by the training loop, which "
               "inject_adapter_in_model leaves out; use peft:lora",
}
# Config fields transferlab sets itself (the head is transferlab's, the base is the model's).
_FIXED = {"peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode", "modules_to_save",
          "runtime_config", "auto_mapping", "megatron_config", "megatron_core", "loftq_config",
          "layer_replication", "peft_version", "target_parameters", "exclude_modules", "trainable_token_indices",
          "eva_config", "corda_config", "arrow_config", "alora_invocation_tokens", "qalora_group_size",
          "lora_ga_config"}


def config_class(kind: str):
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    if kind in TYPES:
        return PEFT_TYPE_TO_CONFIG_MAPPING[TYPES[kind][0]]
    upper = kind.upper()
    if kind in _REFUSED:
        raise ConfigError(f"peft:{kind} is not supported: {_REFUSED[kind]}")
    if upper in PEFT_TYPE_TO_CONFIG_MAPPING:
        cfg = PEFT_TYPE_TO_CONFIG_MAPPING[upper]
        if cfg().is_prompt_learning or upper in ("ADAPTION_PROMPT",):
            why = "it adds virtual tokens to a transformer's input rather than wrapping layers (not a layer method)"
        elif getattr(PEFT_TYPE_TO_TUNER_MAPPING.get(upper), "uses_shared_state", False):
            why = "it keeps state shared by all layers on peft's tuner model, which inject_adapter_in_model refuses"
        else:
            why = "not wired up and tested in transferlab"
        raise ConfigError(f"peft:{kind} is not supported: {why}; supported: {', '.join(TYPES)}")
    raise ConfigError(f"peft: unknown type {kind!r}; supported: {', '.join(TYPES)}")


def settable_fields(kind: str) -> dict[str, dataclasses.Field]:
    cls = config_class(kind)
    return {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in _FIXED}


def _convert(kind: str, key: str, raw: str, hint):
    """`raw` as the peft config field's annotated type (Optional, Literal, list and union of those included)."""
    owner = f"peft:{kind}"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null") and type(None) in args:
            return None
        last = None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(kind, key, raw, arg)
            except ConfigError as exc:
                last = exc
        raise last or ConfigError(f"{owner}: {key}={raw!r} is not valid")
    if origin is typing.Literal:
        if raw in args:
            return raw
        raise ConfigError(f"{owner}: {key}={raw!r} is not one of {', '.join(map(str, args))}")
    if origin in (list, tuple) or hint in (list, tuple):
        item = args[0] if args else str
        return [_convert(kind, key, part, item) for part in raw.split("|") if part]
    if hint in (bool, int, float, str):
        return convert_value(raw, hint, owner, key)
    raise ConfigError(f"{owner}: {key} ({getattr(hint, '__name__', hint)}) cannot be set from a spec")


@register_method
class PeftGeneric(PeftStrategy):
    method = "peft"
    name = "peft"
    new_segments = tuple(dict.fromkeys(seg for _, segs in TYPES.values() for seg in segs))
    markers = (".lora_", ".ia3_", ".hada_", ".lokr_", ".oft_", ".boft_", ".hra_", ".fourierft_")
    wrapper_markers = (".base_layer.",)
    files = (PEFT_CONFIG, PEFT_WEIGHTS)
    mergeable = True  # every type in TYPES folds into the base weights (peft's merge)
    help = ("any of peft's layer methods, configured through peft's own config class: peft:<type>[:key=value,...] "
            f"with type one of {', '.join(TYPES)} (e.g. peft:loha:r=8, peft:lora:use_dora=true); keys are the "
            "config's fields; target_modules defaults to the layers where the update pays (docs/peft.md). "
            "The new head trains alongside. Saves a peft-format task module.")

    @dataclass
    class Params:
        type: str = field(default="", metadata={"help": f"peft method: {', '.join(TYPES)}"})
        options: tuple = field(default=(), metadata={"help": "key=value pairs for the type's peft config class"})

    def __init__(self, params=None):
        super().__init__(params)
        if not self.params.type:
            raise ConfigError(f"peft: name a type, e.g. peft:ia3 or peft:loha:r=8; supported: {', '.join(TYPES)}")
        self.config_kwargs = self._parse_options()

    # ---- spec --------------------------------------------------------------------------------
    @classmethod
    def parse_spec(cls, arg_text: str) -> "PeftGeneric":
        kind, _, rest = arg_text.strip().partition(":")
        options = []
        for item in (rest.split(",") if rest.strip() else []):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise ConfigError(f"peft:{kind}: expected key=value, got {item!r}")
            options.append((key.strip(), value.strip()))
        return cls(cls.Params(type=kind.strip().lower(), options=tuple(options)))

    def spec(self) -> str:
        pairs = ",".join(f"{k}={v}" for k, v in self.params.options)
        return f"peft:{self.params.type}" + (f":{pairs}" if pairs else "")

    def _parse_options(self) -> dict:
        kind = self.params.type
        fields = settable_fields(kind)
        hints = typing.get_type_hints(config_class(kind))
        valid = ", ".join(sorted(fields))
        kwargs = {}
        for key, raw in self.params.options:
            if key not in fields:
                raise ConfigError(f"peft:{kind}: unknown key {key!r}; valid keys: {valid}")
            if key in kwargs:
                raise ConfigError(f"peft:{kind}: key {key!r} given twice")
            if key == "target_modules":
                try:
                    re.compile(raw)
                except re.error as exc:
                    raise ConfigError(f"peft:{kind}: target_modules={raw!r} is not a valid regex: {exc}") from None
                kwargs[key] = raw
                continue
            try:
                kwargs[key] = _convert(kind, key, raw, hints[key])
            except ConfigError as exc:
                raise ConfigError(f"{exc}; valid keys: {valid}") from None
        try:
            self.make_config([], kwargs)
        except (ValueError, TypeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"peft:{kind}: {first}; valid keys: {valid}") from None
        return kwargs

    def make_config(self, targets: list[str], kwargs: dict | None = None, model=None):
        kwargs = dict(self.config_kwargs if kwargs is None else kwargs)
        kwargs.pop("target_modules", None)
        if self.params.type == "ia3":
            kwargs.setdefault("feedforward_modules", [])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return config_class(self.params.type)(target_modules=list(targets) or ["_none_"], **kwargs)

    # ---- structure ---------------------------------------------------------------------------
    def target_modules(self, model) -> list[str]:
        regex = self.config_kwargs.get("target_modules", "auto")
        return choose_targets(model, self.spec(), lambda names: self.make_config(names), regex)

    def add_slot(self, model, slot):
        from peft import inject_adapter_in_model

        super().add_slot(model, slot)
        if slot in getattr(model.backbone, "peft_config", {}):
            return
        targets = self.target_modules(model)
        if self.config_kwargs.get("use_dora"):
            convs = [t for t in targets if isinstance(model.backbone.get_submodule(t), torch.nn.Conv2d)]
            if convs:  # peft 0.21's DoRA Conv2d forward raises in backward-enabled training on timm CNNs
                raise ConfigError(f"{self.spec()}: peft's DoRA on Conv2d layers ({convs[0]}, ...) fails in training "
                                  f"(a .view on a non-contiguous weight in peft/tuners/lora/dora.py): DoRA applies to "
                                  f"Linear layers (transformers) here")
        config = self.make_config(targets)
        config.base_model_name_or_path = _base_name(model)
        # as lora: init draws from the global RNG (seeded by the run), the stream afterwards is left as it was
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                inject_adapter_in_model(config, model.backbone, adapter_name=slot)
            except (ValueError, TypeError, NotImplementedError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ConfigError(f"{self.spec()} on {model.cfg.name}: {first}") from None

    def check_training(self, model, batch, channels_last) -> None:
        """One training step's forward and backward on two real examples through a copy of the model
        (`_probe.py`): a peft layer that fails in training on this model (peft 0.21: OFT, BOFT and HRA Conv2d on
        resnet18, BOFT on ConvNeXt) is refused here in one line, before the run folder."""
        from transferlab.strategies.peft_methods._probe import probe_training

        examples = batch()
        if examples is None:
            return
        other = "lora or peft:ia3" if self.params.type == "lora" else "peft:lora or lora"
        probe_training(model, examples, channels_last, self.trainable(model, 0), f"{self.spec()} on {model.cfg.name}",
                       other)

    def _segments(self) -> tuple[str, ...]:
        return TYPES[self.params.type][1]

    def slot_parameter_names(self, model, slot):
        pattern = re.compile(rf"\.(?:{'|'.join(self._segments())})\.{re.escape(slot)}(?:\.|$)")
        return {n for n, _ in model.named_parameters() if pattern.search(n)}

    @classmethod
    def set_active(cls, model, slot):
        from peft.tuners.tuners_utils import BaseTunerLayer

        for module in model.backbone.modules():
            if isinstance(module, BaseTunerLayer):
                # a layer without this slot skips it: it computes the base layer alone
                module.set_adapter([slot] if slot else [], inference_mode=True)

    def structure(self, model):
        config = model.backbone.peft_config["default"]
        return {"type": self.params.type, "targets": sorted(config.target_modules),
                "options": {k: v for k, v in self.params.options}}

    # ---- task module (peft's format, as lora) -------------------------------------------------
    def save_slot(self, model, slot, directory: Path):
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(model.backbone, adapter_name=slot, save_embedding_layers=False)
        save_tensors(directory / PEFT_WEIGHTS, {_PEFT_PREFIX + k: v.contiguous() for k, v in state.items()},
                     metadata={"format": "pt"})
        config = model.backbone.peft_config[slot].to_dict()
        config["target_modules"] = sorted(config["target_modules"])
        config["base_model_name_or_path"] = _base_name(model)
        config.pop("runtime_config", None)
        atomic_write_json(directory / PEFT_CONFIG, _jsonable(config))
        return {}

    def load_slot(self, model, slot, directory: Path, tensors):
        return load_peft_slot(self, model, slot, directory, self.spec())

    def merge_slot(self, model, slot):
        """Fold the slot into every wrapped layer (peft's `merge`), then drop the wrappers."""
        merge_peft_slot(model, slot)

    @classmethod
    def readme_section(cls, meta, dirname):
        from transferlab.strategies.peft_methods.lora import LoRA

        return LoRA.readme_section(meta, dirname).replace("(LoRA, with peft)", "(with peft)")

    @classmethod
    def variants(cls) -> list[dict]:
        """Each type with its config's settable fields (for `transferlab strategies`)."""
        out = []
        for kind in TYPES:
            hints = typing.get_type_hints(config_class(kind))
            params = []
            for name, f in settable_fields(kind).items():
                default = f.default if f.default is not dataclasses.MISSING else (
                    f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
                params.append({"name": name, "default": _jsonable(default), "type": _type_text(hints.get(name)),
                               "help": str((f.metadata or {}).get("help", "")).split("\n")[0][:200]})
            out.append({"spec": f"peft:{kind}", "config": config_class(kind).__name__, "params": params})
        return out


def _type_text(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _base_name(model) -> str:
    from transferlab.strategies.peft_methods.lora import _base_name as base_name

    return base_name(model)


def _jsonable(obj):
    from transferlab.strategies.peft_methods.lora import _jsonable as jsonable

    return jsonable(obj)
