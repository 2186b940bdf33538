"""peft's own saved format, shared by `lora` and the `peft:` methods: the file names, loading a slot's weights from
them, and folding a slot into the layers it wraps."""
from __future__ import annotations

import json
from pathlib import Path

from transferlab.errors import ConfigError
from transferlab.safe_io import load_tensors

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."  # what peft's PeftModel puts before the backbone's names in its saved files


def load_peft_slot(strategy, model, slot: str, directory: Path, what: str) -> dict:
    """Load the peft-format weights in `directory` into `slot` (already added by `strategy`); ConfigError (one line)
    when the module was made for other targets or its tensors do not fit. `what` names the method in messages."""
    from peft import set_peft_model_state_dict

    saved = json.loads((directory / PEFT_CONFIG).read_text())
    if sorted(saved.get("target_modules") or []) != sorted(model.backbone.peft_config[slot].target_modules):
        raise ConfigError(f"{directory}: the module's targets differ from what {strategy.spec()!r} builds on "
                          f"this model")
    state = {k.removeprefix(PEFT_PREFIX): v for k, v in load_tensors(directory / PEFT_WEIGHTS).items()}
    result = set_peft_model_state_dict(model.backbone, state, adapter_name=slot)
    expected = {n.removeprefix("backbone.") for n in strategy.slot_parameter_names(model, slot)}
    missing = sorted(expected & set(result.missing_keys))
    if result.unexpected_keys or missing:
        raise ConfigError(f"{directory}: {what} weights do not fit the model (missing {missing[:3]}, "
                          f"unexpected {list(result.unexpected_keys)[:3]})")
    return {}


def merge_peft_slot(model, slot: str) -> None:
    """Fold `slot` into every layer peft wraps (peft's own `merge`: for LoRA W <- W + (alpha/r) B A), then put the
    plain layers back and drop peft's config."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    wrapped = [(n, m) for n, m in model.backbone.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, module in wrapped:
        if slot in module._all_available_adapter_names():
            module.merge(adapter_names=[slot])
        parent_name, _, child = name.rpartition(".")
        parent = model.backbone.get_submodule(parent_name) if parent_name else model.backbone
        setattr(parent, child, module.get_base_layer())
    if hasattr(model.backbone, "peft_config"):
        del model.backbone.peft_config
