"""Parameter-efficient strategies: one module per method, each registered on import.

lora (through peft), adapter (hand-written bottleneck adapters), bitfit. They train a small set of parameters
plus the new head, and save a small *task module* (see transferlab.modules) after training.
"""
from transferlab.strategies.peft_methods._base import DEFAULT_SLOT, PeftStrategy
from transferlab.strategies.peft_methods.adapter import Adapter
from transferlab.strategies.peft_methods.bitfit import BitFit
from transferlab.strategies.peft_methods.lora import LoRA

METHODS = {cls.method: cls for cls in (LoRA, Adapter, BitFit)}

__all__ = ["DEFAULT_SLOT", "METHODS", "PeftStrategy", "LoRA", "Adapter", "BitFit"]
