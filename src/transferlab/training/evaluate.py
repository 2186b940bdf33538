"""Evaluation loops shared by the trainer, `transferlab evaluate` and the diagnostics."""
from __future__ import annotations

from contextlib import nullcontext

import torch

from transferlab.nn_utils import to_device  # noqa: F401  (the layers above import it from here too)


def ordered_loader(dataset, batch_size: int, collate, **options) -> "torch.utils.data.DataLoader":
    """A DataLoader in dataset order with a generator of its own: without one, creating its iterator draws the
    workers' base seed from torch's global generator, so an evaluation would shift the training stream after
    it (dropout masks, and everything else drawn later)."""
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                      generator=torch.Generator().manual_seed(0), **options)


@torch.no_grad()
def evaluate(model, loader, device, objective=None, prepare=None, autocast=nullcontext) -> dict:
    """The objective's mean loss and accuracy over a loader: {"loss", "accuracy", "n"} (default:
    cross-entropy and accuracy). `prepare(batch)` puts a batch on the device in the run's layout (default:
    `to_device`); forward passes run inside `autocast()` (the run's precision), the loss in float32."""
    from transferlab.training.objectives import Classification

    objective = objective or Classification()
    was_training = model.training
    model.eval()
    sums = {"loss": 0.0, "correct": 0, "n": 0}
    for batch in loader:
        if batch["labels"].numel() == 0:
            continue
        batch = prepare(batch) if prepare is not None else to_device(batch, device)
        with autocast():
            outputs = model(batch)
        part = objective.batch_sums(outputs.float(), batch["labels"])
        sums["loss"] += part["loss"]
        sums["correct"] = None if part["correct"] is None else sums["correct"] + part["correct"]
        sums["n"] += part["n"]
    model.train(was_training)
    return objective.summary(sums)

