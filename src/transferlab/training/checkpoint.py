"""Checkpoints as single safetensors files (model, optimiser, RNG, strategy tensors), written atomically.

One file per checkpoint, so a kill during a write leaves the previous checkpoint whole: the new one is
written under a temporary name and renamed over the old one. Non-tensor trainer state goes into the
safetensors metadata as JSON; nothing is ever unpickled.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from transferlab.safe_io import load_tensors, save_tensors
from transferlab.errors import UnsafeFileError


def optimizer_to_flat(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, plain = {}, {"param_groups": [], "state": {}}
    for group in opt_state["param_groups"]:
        plain["param_groups"].append({k: v for k, v in group.items()})
    for idx, entry in opt_state["state"].items():
        plain["state"][str(idx)] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                plain["state"][str(idx)][key] = value
    return tensors, plain


def optimizer_from_flat(tensors: dict[str, torch.Tensor], plain: dict) -> dict:
    state: dict[int, dict] = {int(k): dict(v) for k, v in plain["state"].items()}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def save_checkpoint(path: Path, model, optimizer, trainer_state: dict, strategy_tensors: dict,
                    extra_rng: dict[str, torch.Tensor] | None = None) -> None:
    """`extra_rng`: generator states beside this process's (a distributed run's other ranks, 'rank1.torch', ...)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_tensors, opt_plain = optimizer_to_flat(optimizer.state_dict())
    tensors.update(opt_tensors)
    tensors.update({f"strategy.{k}": v for k, v in strategy_tensors.items()})
    tensors["rng.torch"] = torch.get_rng_state()
    tensors.update({f"rng.{k}": v for k, v in (extra_rng or {}).items()})
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda{i}"] = s
    meta = {"trainer_state": json.dumps(trainer_state), "optimizer": json.dumps(opt_plain),
            "format": "transferlab-checkpoint-1"}
    save_tensors(path, tensors, metadata=meta)


def load_checkpoint(path: Path) -> tuple[dict, dict, dict, dict, dict]:
    """(model_state, optimizer_state, trainer_state, strategy_tensors, rng) from a checkpoint file."""
    from safetensors import safe_open

    tensors = load_tensors(path)
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != "transferlab-checkpoint-1":
        raise UnsafeFileError(f"{path}: not a transferlab checkpoint")
    groups: dict[str, dict] = {"model": {}, "optim": {}, "strategy": {}, "rng": {}}
    for key, value in tensors.items():
        head, _, rest = key.partition(".")
        if head == "optim":
            groups["optim"][key] = value
        else:
            groups[head][rest] = value
    opt_state = optimizer_from_flat(groups["optim"], json.loads(meta["optimizer"]))
    return groups["model"], opt_state, json.loads(meta["trainer_state"]), groups["strategy"], groups["rng"]


def save_weights(path: Path, model) -> None:
    save_tensors(path, model.state_dict(), metadata={"format": "transferlab-weights-1"})
