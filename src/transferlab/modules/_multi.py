"""One base model, several task modules attached by name, one active at a time.

    tasks = MultiTaskModel.for_module("runs/ants_bees")       # builds the base the module was made for
    tasks.attach("ants_bees", "runs/ants_bees")
    tasks.attach("digits_low", "runs/digits_low")             # refused if made for another base
    tasks.activate("digits_low"); logits = tasks(batch)       # (B, C of that task)

The base weights are held once. LoRA and adapter modules live side by side in named slots (peft's adapter
names, and the adapters' ModuleDict); switching selects the slot. Tensors a module *replaces* (BitFit's biases,
changed BatchNorm statistics) are swapped in on activation and the base values restored on the next switch.
Each task keeps its own head.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from transferlab.errors import ConfigError
from transferlab.strategies.peft_methods.task_module import apply_overrides, build_base, check_base, head_from, read_meta, \
    read_module_tensors, strategy_for
from transferlab.strategies.peft_methods._base import plain_name


class MultiTaskModel(nn.Module):
    def __init__(self, base):
        super().__init__()
        self.base = base
        self.heads = nn.ModuleDict()
        self.active: str | None = None
        self.class_names: dict[str, list[str]] = {}
        self.methods: dict[str, str] = {}
        self._overrides: dict[str, dict[str, torch.Tensor]] = {}
        self._base_values: dict[str, torch.Tensor] = {}
        self.eval()  # for inference: BatchNorm uses its (the active module's) running statistics

    @classmethod
    def for_module(cls, path: str | Path) -> "MultiTaskModel":
        """An empty model on the base that the module at `path` was made for."""
        _, meta = read_meta(path)
        return cls(build_base(meta))

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    def attach(self, name: str, path: str | Path) -> None:
        if not name or "." in name or name in self.heads:
            raise ConfigError(f"task name {name!r} is empty, contains '.', or is already attached")
        directory, meta = read_meta(path)
        check_base(meta, self.base, directory)
        strategy = strategy_for(meta)
        tensors = read_module_tensors(directory, meta)
        strategy.add_slot(self.base, name)
        overrides = strategy.load_slot(self.base, name, directory, tensors)
        overrides.update({k: tensors[k] for k in meta["tensors"]["batchnorm"]})
        # Remember the base value of every tensor some module replaces, the first time one does (no module
        # replacing it can be active then, so the current value is the base's).
        current = {plain_name(k): v for k, v in self.base.state_dict().items()}
        for key in overrides:
            if key not in self._base_values:
                if self.active is not None and key in self._overrides.get(self.active, {}):
                    raise AssertionError("unreachable: an active module's override has no base value")
                self._base_values[key] = current[key].detach().clone()
        device = next(self.base.parameters()).device
        self._overrides[name] = {k: v.to(device) for k, v in overrides.items()}
        self.heads[name] = head_from(meta, tensors).to(device)
        self.class_names[name] = list(meta["head"]["classes"])
        self.methods[name] = meta["method"]
        self.activate(self.active or name)

    def activate(self, name: str | None) -> None:
        """Make `name` the task the forward pass runs (None: the bare base, no head)."""
        from transferlab.strategies.peft_methods import METHODS

        if name is not None and name not in self.heads:
            raise ConfigError(f"no task module attached as {name!r}; attached: {', '.join(self.heads) or 'none'}")
        apply_overrides(self.base, self._base_values)
        if name is not None:
            apply_overrides(self.base, self._overrides[name])
        for cls in METHODS.values():
            cls.set_active(self.base, name)  # slots of other methods simply do not exist under this name
        self.active = name

    def features(self, batch: dict) -> torch.Tensor:
        return self.base.features(batch)

    def forward(self, batch: dict) -> torch.Tensor:
        if self.active is None:
            raise ConfigError("no active task: attach a module and activate it")
        return self.heads[self.active](self.base.features(batch))
