"""MCC: minimum class confusion (Jin et al. 2020, ECCV, "Minimum Class Confusion for Versatile Domain
Adaptation")."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from transferlab.strategies.base import Tunable
from transferlab.strategies.domain._common import DomainStrategy
from transferlab.strategies.registry import register_strategy


def class_confusion_loss(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The MCC loss of target logits (B, C): Y = softmax(Z / T); example weights W_i = B (1 + exp(-H_i)) /
    sum_k (1 + exp(-H_k)), H the entropy of Y_i (no gradient through them); the class confusion
    C = Y^T diag(W) Y (C, C), each column divided by its sum; the loss is the off-diagonal sum over C."""
    y = F.softmax(logits.float() / temperature, dim=1)  # (B, C)
    b, c = y.shape
    with torch.no_grad():
        entropy = -(y * torch.log(y.clamp_min(1e-12))).sum(1)  # (B,)
        w = 1.0 + torch.exp(-entropy)
        w = b * w / w.sum()
    confusion = (y * w.unsqueeze(1)).T @ y  # (C, C)
    confusion = confusion / confusion.sum(dim=0, keepdim=True)
    return (confusion.sum() - confusion.trace()) / c


@register_strategy
class MCC(DomainStrategy):
    name = "mcc"
    help = ("Jin et al. 2020: minimises the confusion between classes in the target predictions (softmax at "
            "temperature T, entropy-weighted examples, column-normalised class correlations; the loss is the "
            "off-diagonal mass over C). No adversary. Needs --target-data (unlabelled).")

    @dataclass
    class Params:
        temperature: float = field(default=2.5, metadata={"help": "softmax temperature T (the paper's 2.5)"})
        weight: float = field(default=1.0, metadata={"help": "weight of the class-confusion loss"})

        def __post_init__(self):
            if self.temperature <= 0:
                raise ValueError("temperature must be > 0")
            if self.weight < 0:
                raise ValueError("weight must be >= 0")

    @classmethod
    def search_space(cls, ctx):
        return {"temperature": Tunable(1.0, 5.0), "weight": Tunable(0.1, 3.0, log=True)}

    def domain_terms(self, source_features, source_logits, target_features, target_logits, progress):
        return {"mcc": self.params.weight * class_confusion_loss(target_logits, self.params.temperature)}
