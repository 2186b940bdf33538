"""Lab `peft`: the order in which the swap check activates the task modules on the shared base."""
from __future__ import annotations

from transferlab.labs.peft import swap_order


def test_swap_order_activates_every_module_twice_never_twice_in_a_row():
    names = ["lora_digits", "adapter_digits", "bitfit_digits", "lora_digits5-9"]
    order = swap_order(names)
    assert sorted(order) == sorted(names * 2)
    assert all(a != b for a, b in zip(order, order[1:]))
    assert order == ["lora_digits", "adapter_digits", "bitfit_digits", "lora_digits5-9", "bitfit_digits",
                     "adapter_digits", "lora_digits", "lora_digits5-9"]
