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
    """Base of lora, adapter and bitfit: the new head trains alongside the method's own parameters."""

    role = "selection"
    method: ClassVar[str] = ""
    # Module-name segments of the parameters the method adds (TransferModel.new_markers).
    new_segments: ClassVar[tuple[str, ...]] = ()

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
