"""Evaluation loops shared by the trainer, `transferlab evaluate` and the diagnostics."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate(model, loader, device) -> dict:
    """Mean cross-entropy and accuracy over a loader: {"loss", "accuracy", "n"}."""
    was_training = model.training
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    for batch in loader:
        if batch["labels"].numel() == 0:
            continue
        batch = to_device(batch, device)
        logits = model(batch)
        total_loss += F.cross_entropy(logits, batch["labels"], reduction="sum").item()
        correct += (logits.argmax(1) == batch["labels"]).sum().item()
        n += batch["labels"].numel()
    model.train(was_training)
    if n == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "n": 0}
    return {"loss": total_loss / n, "accuracy": correct / n, "n": n}


@torch.no_grad()
def predict_proba(model, loader, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities (N, C), labels (N,)) over a loader."""
    model.eval()
    probs, labels = [], []
    for batch in loader:
        if batch["labels"].numel() == 0:
            continue
        batch = to_device(batch, device)
        probs.append(model(batch).softmax(-1).cpu())
        labels.append(batch["labels"].cpu())
    return torch.cat(probs), torch.cat(labels)
