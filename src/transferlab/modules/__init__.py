"""Task modules: the small pluggable result of a parameter-efficient run, and their life cycle.

    from transferlab.modules import load_task_module, MultiTaskModel, write_merged
    model = load_task_module("runs/lora")              # base + module, ready to predict
    tasks = MultiTaskModel.for_module("runs/a")         # one base, several modules, switch by name
    tasks.attach("a", "runs/a"); tasks.attach("b", "runs/b"); tasks.activate("b")
    write_merged("runs/lora", "runs/lora_merged")      # LoRA/BitFit folded into a plain checkpoint

The format belongs to the PEFT methods that write it (`transferlab.strategies.peft_methods.task_module`,
and docs/peft.md); this package reads, merges, exports and combines modules. Every reader goes through `read_meta`, which refuses
metadata naming anything but the module's own plain files; merge and export write only to a new folder or to an
earlier output of theirs (transferlab.outputs), never into the module or its run.
"""
from transferlab.strategies.peft_methods.task_module import FORMAT, META, STATE, base_fingerprint, check_base, check_module_files, \
    find_modules, full_checkpoint_bytes, load_task_module, module_summary, read_meta, resolve_module_dir, \
    write_task_module
from transferlab.modules._merge import export_module, merge_task_module, write_merged
from transferlab.modules._multi import MultiTaskModel
from transferlab.modules._combine import merge_modules

__all__ = ["FORMAT", "META", "STATE", "MultiTaskModel", "base_fingerprint", "check_base", "check_module_files",
           "export_module", "find_modules", "full_checkpoint_bytes", "load_task_module", "merge_modules", "merge_task_module",
           "module_summary", "read_meta", "resolve_module_dir", "write_merged", "write_task_module"]
