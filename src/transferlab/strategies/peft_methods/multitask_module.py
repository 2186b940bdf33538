"""Reading a multi-task module (what `transferlab modules merge A B ...` writes): one merged backbone update and each
task's own head and BatchNorm statistics. Here, below the run layer, so that `load_run(..., task=)` can read it;
the merge itself is `transferlab.modules._combine`."""
from __future__ import annotations

import json
from pathlib import Path

from transferlab.errors import ConfigError
from transferlab.safe_io import load_tensors
from transferlab.strategies.peft_methods._slots import DEFAULT_SLOT
from transferlab.strategies.peft_methods.task_module import apply_overrides, check_base, head_from

FORMAT = "transferlab-multitask-1"
MARKER = "multitask.json"
BACKBONE = "backbone.safetensors"
TASKS = "tasks.safetensors"


def is_multitask(path: str | Path) -> bool:
    return (Path(path) / MARKER).is_file()


def read_multitask(path: str | Path) -> dict:
    marker = Path(path) / MARKER
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"{marker}: not a readable multi-task module") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{marker}: not a {FORMAT} file")
    return meta


def task_entry(path: str | Path, task: str | None) -> dict:
    """One task's entry of a multi-task module: its run config (as a dict), classes, head and BatchNorm names."""
    meta = read_multitask(path)
    if task is None:
        raise ConfigError(f"{path} is a multi-task module (tasks {', '.join(meta['tasks'])}): pass --task NAME")
    if task not in meta["tasks"]:
        raise ConfigError(f"{path} has no task {task!r}; tasks: {', '.join(meta['tasks'])}")
    return meta["tasks"][task]


def apply_task(model, path: str | Path, task: str) -> None:
    """Turn `model` (the plain base built from the task's run config) into the merged model for `task`."""
    path = Path(path)
    meta = read_multitask(path)
    entry = meta["tasks"][task]
    fake_meta = {"base": meta["base"]}
    check_base(fake_meta, model, path)
    backbone = load_tensors(path / BACKBONE)
    tasks = load_tensors(path / TASKS)
    if meta["backbone"]["kind"] == "module":
        from transferlab.strategies.registry import parse_one

        strategy = parse_one(meta["backbone"]["spec"])
        strategy.add_slot(model, DEFAULT_SLOT)
        strategy.set_active(model, DEFAULT_SLOT)
        apply_overrides(model, strategy.load_slot(model, DEFAULT_SLOT, path, backbone))
    else:
        apply_overrides(model, backbone)
    own = {k.split("/", 1)[1]: v for k, v in tasks.items() if k.startswith(f"{task}/")}
    apply_overrides(model, {k: own[k] for k in entry["batchnorm"]})
    head_meta = {"head": entry["head"]}
    model.head = head_from(head_meta, own).to(next(model.parameters()).device)
    model.num_classes = model.head.out_features
    model.class_names = list(entry["classes"])
    model.eval()
