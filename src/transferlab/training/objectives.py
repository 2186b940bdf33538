"""What a run optimises and how it is judged, in one object: the loss, the per-batch metric sums, and the key
that selects the best epoch. Classification (cross-entropy, accuracy) is the default; squared error is here
for regression heads (and for checking L2-SP's closed form through the trainer).

    objective.loss(outputs, labels)        the mean loss of a batch (a tensor to back-propagate)
    objective.correct(outputs, labels)     correct predictions in a batch (None without a notion of accuracy)
    objective.batch_sums(outputs, labels)  {"loss": sum, "correct": int | None, "n": int} as Python numbers
    objective.summary(sums)                {"loss", "accuracy", "n"} (accuracy None where it has no meaning)
    objective.improves(accuracy, loss, best_accuracy, best_loss)   the selection rule
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F


class Objective:
    name: ClassVar[str] = ""

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def correct(self, outputs: torch.Tensor, labels: torch.Tensor) -> int | None:
        """Correct predictions in a batch; None where accuracy has no meaning."""
        return None

    def batch_sums(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict:
        raise NotImplementedError

    def improves(self, accuracy, loss: float, best_accuracy: float, best_loss: float) -> bool:
        raise NotImplementedError

    @staticmethod
    def summary(sums: dict) -> dict:
        n = sums["n"]
        if n == 0:
            return {"loss": float("nan"), "accuracy": float("nan"), "n": 0}
        correct = sums.get("correct")
        return {"loss": sums["loss"] / n, "accuracy": None if correct is None else correct / n, "n": n}


class Classification(Objective):
    """Cross-entropy on class indices; the best epoch has the highest validation accuracy (ties: lower loss)."""

    name = "classification"

    def loss(self, outputs, labels):
        return F.cross_entropy(outputs, labels)

    def correct(self, outputs, labels):
        return (outputs.argmax(1) == labels).sum().item()

    def batch_sums(self, outputs, labels):
        return {"loss": F.cross_entropy(outputs, labels, reduction="sum").item(),
                "correct": self.correct(outputs, labels), "n": labels.numel()}

    def improves(self, accuracy, loss, best_accuracy, best_loss):
        return accuracy > best_accuracy or (accuracy == best_accuracy and loss < best_loss)


class SquaredError(Objective):
    """0.5 (y_hat - y)^2 per example, for a single real output; the best epoch has the lowest validation loss."""

    name = "squared_error"

    def loss(self, outputs, labels):
        return 0.5 * (outputs.squeeze(-1) - labels.to(outputs.dtype)).pow(2).mean()

    def batch_sums(self, outputs, labels):
        return {"loss": 0.5 * (outputs.squeeze(-1) - labels.to(outputs.dtype)).pow(2).sum().item(),
                "correct": None, "n": labels.numel()}

    def improves(self, accuracy, loss, best_accuracy, best_loss):
        return loss < best_loss or (math.isinf(best_loss) and not math.isnan(loss))


OBJECTIVES = {cls.name: cls for cls in (Classification, SquaredError)}
