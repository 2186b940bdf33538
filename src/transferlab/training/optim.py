"""Optimiser with one parameter group per depth group, and a warm-up + decay schedule by global step (restarted
at the phase boundaries a strategy declares)."""
from __future__ import annotations

import math

import torch

from transferlab.training.config import TrainConfig


def build_optimizer(model, trainable: set[str] | None, config: TrainConfig,
                    anchored: set[str] = frozenset(), own: list | None = None) -> torch.optim.Optimizer:
    """Parameter groups per (depth group, decayed or not); each remembers its depth group index.

    Biases and normalisation weights (1-d tensors) get no weight decay, the usual practice; nor do `anchored`
    parameters, which a regulariser pulls towards their pre-trained values (l2sp, ewc). `own`: the strategy's
    own (name, parameter) pairs (a domain discriminator), in groups of their own after the model's, at the head's
    learning rate scale.
    """
    groups = []
    for index, named in enumerate(model.grouped_parameters()):
        chosen = [(n, p) for n, p in named if trainable is None or n in trainable]
        decay = [p for n, p in chosen if p.ndim > 1 and n not in anchored]
        no_decay = [p for n, p in chosen if p.ndim <= 1 or n in anchored]
        name = model.depth_groups[index].name
        for params, wd, suffix in ((decay, config.weight_decay, ""), (no_decay, 0.0, "/no_decay")):
            if params:
                groups.append({"params": params, "weight_decay": wd, "lr": config.lr, "base_lr": config.lr,
                               "depth_group": index, "name": name + suffix})
    head = len(model.depth_groups) - 1
    decay = [p for _, p in own or [] if p.ndim > 1]
    no_decay = [p for _, p in own or [] if p.ndim <= 1]
    for params, wd, suffix in ((decay, config.weight_decay, ""), (no_decay, 0.0, "/no_decay")):
        if params:
            groups.append({"params": params, "weight_decay": wd, "lr": config.lr, "base_lr": config.lr,
                           "depth_group": head, "name": "strategy" + suffix})
    if not groups:
        raise ValueError("the strategy leaves no parameter to train")
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


def schedule_factor(step: int, total_steps: int, config: TrainConfig, restarts: list[int] = ()) -> float:
    """Multiplier of each group's base rate at a global step: linear warm-up, then cosine/linear/constant.

    `restarts` (global steps, from `restart_steps`) split the run into phases, each scheduled as a run of its
    own: a warm-up over `config.warmup` of the phase's steps, then the decay to the phase's end (the run's end
    for the last one). Without restarts, one schedule spans the run. A function of the step and the run's
    settings only, so a resumed run continues the same sequence."""
    start, end = 0, total_steps
    for boundary in sorted(restarts):
        if boundary <= step:
            start = boundary
        elif boundary < end:
            end = boundary
            break
    step, total_steps = step - start, end - start
    warmup = int(config.warmup * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - warmup)
    if config.schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def restart_steps(strategy, total_epochs: int, batches_per_epoch: int) -> list[int]:
    """The global steps at which the strategy's `schedule_restarts` epochs begin (epoch 0 and epochs past the
    run's end are no restart)."""
    return sorted({epoch * batches_per_epoch for epoch in strategy.schedule_restarts(total_epochs)
                   if 0 < epoch < total_epochs})


def set_group_base_lrs(optimizer, scales: list[float] | None, base_lr: float) -> None:
    for group in optimizer.param_groups:
        group["base_lr"] = base_lr * (scales[group["depth_group"]] if scales is not None else 1.0)


def apply_schedule(optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor


def group_lrs(optimizer) -> dict[str, float]:
    return {g["name"]: g["lr"] for g in optimizer.param_groups}
