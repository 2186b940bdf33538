"""Evaluation loops shared by the trainer, `transferlab evaluate` and the diagnostics."""
from __future__ import annotations

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
def evaluate(model, loader, device, objective=None) -> dict:
    """The objective's mean loss and accuracy over a loader: {"loss", "accuracy", "n"} (default:
    cross-entropy and accuracy)."""
    from transferlab.training.objectives import Classification

    objective = objective or Classification()
    was_training = model.training
    model.eval()
    sums = {"loss": 0.0, "correct": 0, "n": 0}
    for batch in loader:
        if batch["labels"].numel() == 0:
            continue
        batch = to_device(batch, device)
        part = objective.batch_sums(model(batch), batch["labels"])
        sums["loss"] += part["loss"]
        sums["correct"] = None if part["correct"] is None else sums["correct"] + part["correct"]
        sums["n"] += part["n"]
    model.train(was_training)
    return objective.summary(sums)

