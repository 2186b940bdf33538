"""Parameter-efficient strategies: one module (or folder) per method, each registered by `@register_method`
on its class.

lora (through peft), adapter (hand-written bottleneck adapters), bitfit. They train a small set of parameters
plus the new head, and save a small *task module* (see transferlab.modules) after training. Every public module
and sub-package here is imported below, so a new method is one file plus its decorator; `task_module` (the
format) is one of them and registers nothing.
"""
from transferlab.strategies.peft_methods._base import DEFAULT_SLOT, PeftStrategy
from transferlab.strategies.peft_methods._registry import METHODS, register_method, unregister_method
from transferlab.strategies._discover import import_submodules

import_submodules(__name__, __path__)

from transferlab.strategies.peft_methods.adapter import Adapter  # noqa: E402  (public names, kept)
from transferlab.strategies.peft_methods.bitfit import BitFit  # noqa: E402
from transferlab.strategies.peft_methods.lora import LoRA  # noqa: E402

__all__ = ["DEFAULT_SLOT", "METHODS", "PeftStrategy", "LoRA", "Adapter", "BitFit", "register_method",
           "unregister_method"]
