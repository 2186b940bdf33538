"""What the parameter-efficient strategies share: slots, the trainable set, task-module hooks.

A method adds its modules to a named *slot* ("default" while training). Training and a single loaded task
module use that one slot; `transferlab.modules.MultiTaskModel` adds one slot per attached task module to a
single base model and switches between them. Each method implements five small hooks:

    add_slot(model, slot)                  structural change (LoRA layers, adapter modules); idempotent per slot
    slot_parameter_names(model, slot)      parameters the method trains in that slot
    save_slot(model, slot, directory)      tensors for module.safetensors (slot-free names); may write files
    load_slot(model, slot, directory, t)   load a saved slot; returns *overrides*: values for tensors the base
                                           model already has (BitFit's biases), applied by the caller
    set_active(model, slot | None)         which slot the forward pass uses (None: the bare base model)
    merge_slot(model, slot)                fold the slot into the base weights (LoRA, BitFit) or refuse

and declares its facts on the class (`method`, `new_segments`, `markers`, `wrapper_markers`, `files`,
`mergeable`), registering with `@register_method` (peft_methods/_registry.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

from transferlab.errors import ConfigError
from transferlab.strategies.base import Strategy, head_names

from transferlab.strategies.peft_methods._slots import DEFAULT_SLOT, batchnorm_buffers, plain_name  # noqa: F401


def claim_prefix(model, prefix: str) -> None:
    """Make sure parameters under `prefix` (a module the method added) belong to a depth group: if no group
    covers it, it joins the group of the first parameter under its host module."""
    try:
        model.group_index(prefix)
        return
    except KeyError:
        pass
    host = prefix.rsplit(".", 1)[0]
    first = next((n for n, _ in model.named_parameters() if n.startswith(host + ".") and not n.startswith(prefix)),
                 None)
    if first is None:
        raise ConfigError(f"cannot place {prefix} in a depth group")
    model.add_to_group(prefix, like=first)


class PeftStrategy(Strategy):
    """Base of every PEFT method (lora, adapter, bitfit, ...): the new head trains alongside the method's own
    parameters."""

    role = "selection"
    # ---- the method's facts, read by the shared code through `_registry` (task modules, merging, slots) ----
    method: ClassVar[str] = ""  # its name in a task module's metadata; `register_method` defaults it to `name`
    # Module-name segments of the modules the method adds (TransferModel.new_markers).
    new_segments: ClassVar[tuple[str, ...]] = ()
    # Fragments of the parameter names of the tensors it adds, matched against "." + name (".lora_"):
    # left out of a plain checkpoint, gone after a merge.
    markers: ClassVar[tuple[str, ...]] = ()
    # Fragments it inserts into the names of the base tensors it wraps (peft's ".base_layer."): `plain_name`
    # removes them; gone after a merge.
    wrapper_markers: ClassVar[tuple[str, ...]] = ()
    # Task-module files it writes besides module.safetensors (each one of outputs.MODULE_FILES).
    files: ClassVar[tuple[str, ...]] = ()
    # Whether `merge_slot` folds the slot into the base weights (the others refuse, with their reason).
    mergeable: ClassVar[bool] = False

    def __init__(self, params=None):
        super().__init__(params)
        self.bn_reference: dict[str, torch.Tensor] = {}

    # ---- Strategy hooks ----------------------------------------------------------------------
    def prepare_model(self, model) -> None:
        # Called on the pre-trained model: its BatchNorm statistics are the reference the task module's
        # "changed statistics" are measured against.
        self.bn_reference = batchnorm_buffers(model)
        self.add_slot(model, DEFAULT_SLOT)
        self.set_active(model, DEFAULT_SLOT)

    def trainable(self, model, epoch):
        return self.slot_parameter_names(model, DEFAULT_SLOT) | head_names(model)

    def save_task_module(self, model, out_dir):
        from transferlab.strategies.peft_methods.task_module import write_task_module

        return write_task_module(self, model, Path(out_dir) / "task_module", run_dir=Path(out_dir))

    # ---- method hooks ------------------------------------------------------------------------
    def register_new(self, model) -> None:
        model.new_markers.update(self.new_segments)

    def add_slot(self, model, slot: str) -> None:
        self.register_new(model)

    def slot_parameter_names(self, model, slot: str) -> set[str]:
        raise NotImplementedError

    def save_slot(self, model, slot: str, directory: Path) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_slot(self, model, slot: str, directory: Path, tensors: dict[str, torch.Tensor]) -> dict:
        raise NotImplementedError

    @classmethod
    def set_active(cls, model, slot: str | None) -> None:
        pass

    def merge_slot(self, model, slot: str) -> None:
        raise ConfigError(f"{self.method} modules cannot be merged into the base weights")

    def structure(self, model) -> dict:
        """JSON facts about the added structure, recorded in the task module (targets, sites, sizes)."""
        return {}

    @classmethod
    def readme_section(cls, meta: dict, dirname: str) -> str:
        """Markdown appended to an exported module's README (LoRA: loading it with peft alone)."""
        return ""
