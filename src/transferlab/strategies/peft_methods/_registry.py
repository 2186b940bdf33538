"""Every PEFT method, registered by `@register_method` on its class, and the facts the shared code reads from it.

A method declares what is specific to it on its class (see `_base.PeftStrategy`):

    method            its name in a task module's metadata ("lora")
    new_segments      module-name segments of the modules it adds ("lora_A"): TransferModel.new_markers
    markers           fragments of the parameter names of its added tensors (".lora_"), matched against
                      "." + name: what a plain checkpoint leaves out, what a merge must leave behind
    wrapper_markers   fragments it inserts into the names of the base tensors it wraps (peft's ".base_layer."):
                      `plain_name` removes them, and a merge must leave none
    files             files of a task module beside module.safetensors that it writes (peft's two for LoRA)
    mergeable         whether `merge_slot` folds it into the base weights

The task-module format (`task_module.py`), merging and several modules on one base (`transferlab.modules`) read
these facts here instead of keeping lists of their own. The lowest module of peft_methods: it imports none of them.
"""
from __future__ import annotations

from transferlab.errors import ConfigError
from transferlab.outputs import MODULE_FILES

METHODS: dict = {}  # method name -> class, in registration order (peft_methods imports its modules by name)


def register_method(cls):
    """Class decorator: register a PeftStrategy subclass as a strategy (`cls.name`) and as a PEFT method
    (`cls.method`, defaulting to `cls.name`)."""
    from transferlab.strategies.registry import register_strategy

    if not getattr(cls, "method", ""):
        cls.method = cls.name
    extra = set(cls.files) - MODULE_FILES
    if extra:  # outputs.MODULE_FILES is what `--overwrite` may delete in a task-module folder
        raise ConfigError(f"PEFT method {cls.method!r} writes {sorted(extra)}, which are not task-module files "
                          f"(transferlab.outputs.MODULE_FILES)")
    register_strategy(cls)
    METHODS[cls.method] = cls
    return cls


def unregister_method(method: str) -> None:
    """Remove a method and its strategy (tests' toy methods)."""
    from transferlab.strategies.registry import unregister_strategy

    cls = METHODS.pop(method)
    unregister_strategy(cls.name)


def method_class(method: str | None):
    """The registered class of `method`, or None."""
    return METHODS.get(method)


def added_markers() -> tuple[str, ...]:
    """Every method's `markers`: fragments of the names of tensors some method adds."""
    return tuple(dict.fromkeys(m for cls in METHODS.values() for m in cls.markers))


def wrapper_markers() -> tuple[str, ...]:
    """Every method's `wrapper_markers`: fragments inserted into the names of wrapped base tensors."""
    return tuple(dict.fromkeys(m for cls in METHODS.values() for m in cls.wrapper_markers))


def is_added(name: str) -> bool:
    """Whether a parameter or buffer name belongs to a module some method added."""
    dotted = f".{name}"
    return any(m in dotted for m in added_markers())


def needed_files(method: str | None) -> tuple[str, ...]:
    """The files (besides the metadata and module.safetensors) a module of `method` is made of."""
    cls = METHODS.get(method)
    return tuple(cls.files) if cls is not None else ()


def is_mergeable(method: str | None) -> bool:
    cls = METHODS.get(method)
    return bool(cls is not None and cls.mergeable)


def method_names() -> list[str]:
    return list(METHODS)
