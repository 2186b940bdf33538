"""CDAN: conditional adversarial domain adaptation (Long et al. 2018, NeurIPS, "Conditional Adversarial Domain
Adaptation")."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from transferlab.strategies.base import Tunable
from transferlab.strategies.domain._common import DomainDiscriminator, DomainStrategy, domain_loss, \
    grl_coefficient, reverse_gradient
from transferlab.strategies.registry import register_strategy

MAX_MULTILINEAR = 4096  # the paper: the full multilinear map up to d_f * d_g = 4096, a randomised one beyond


def multilinear_map(features: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """f (x) g: (B, D) and (B, C) -> (B, C * D), the flattened outer product per example."""
    return torch.bmm(predictions.unsqueeze(2), features.unsqueeze(1)).flatten(1)


def randomized_map(features: torch.Tensor, predictions: torch.Tensor, r_f: torch.Tensor,
                   r_g: torch.Tensor) -> torch.Tensor:
    """(R_f f) * (R_g g) / sqrt(d): (B, D), (B, C) -> (B, d), R_f (D, d) and R_g (C, d) fixed Gaussian matrices;
    its inner products approximate those of f (x) g (the paper's randomised multilinear map)."""
    return (features @ r_f) * (predictions @ r_g) / math.sqrt(r_f.shape[1])


def entropy_weights(predictions: torch.Tensor) -> torch.Tensor:
    """1 + exp(-H(g)) per example, H the entropy of its predicted distribution (B, C) -> (B,): confident
    predictions weigh more (the paper's entropy conditioning)."""
    entropy = -(predictions * torch.log(predictions.clamp_min(1e-12))).sum(1)
    return 1.0 + torch.exp(-entropy)


@register_strategy
class CDAN(DomainStrategy):
    name = "cdan"
    help = ("Long et al. 2018: a domain discriminator on the multilinear map of the features and the softmax "
            "predictions, f (x) g (a randomised multilinear map when D*C > 4096), behind DANN's gradient-reversal "
            "layer and schedule; with entropy=true each example's loss weighs 1+exp(-H(g)), normalised per domain. "
            "Needs --target-data (unlabelled).")

    @dataclass
    class Params:
        entropy: bool = field(default=True, metadata={"help": "entropy conditioning: weigh examples by 1+exp(-H)"})
        weight: float = field(default=1.0, metadata={"help": "weight of the conditional adversarial loss"})
        hidden: int = field(default=1024, metadata={"help": "width of the discriminator's two hidden layers"})
        random_dim: int = field(default=1024, metadata={
            "help": "output width of the randomised multilinear map (used when D*C > 4096)"})

        def __post_init__(self):
            if self.weight < 0:
                raise ValueError("weight must be >= 0")
            if self.hidden < 1 or self.random_dim < 1:
                raise ValueError("hidden and random_dim must be >= 1")

    @classmethod
    def search_space(cls, ctx):
        return {"weight": Tunable(0.1, 3.0, log=True)}

    def build(self, model):
        d, c = model.feature_dim, model.num_classes
        modules = nn.ModuleDict()
        if d * c > MAX_MULTILINEAR:
            # fixed random projections: buffers (checkpointed, never trained), drawn from the run's seed
            modules.register_buffer("r_f", torch.randn(d, self.params.random_dim))
            modules.register_buffer("r_g", torch.randn(c, self.params.random_dim))
            width = self.params.random_dim
        else:
            width = d * c
        modules["discriminator"] = DomainDiscriminator(width, self.params.hidden)
        return modules

    def domain_terms(self, source_features, source_logits, target_features, target_logits, progress):
        n = source_features.shape[0]
        features = torch.cat([source_features, target_features])  # (B, D), B = Bs + Bt
        # g is detached, as in the paper's code: the adversary shapes the features, not the predictions
        predictions = F.softmax(torch.cat([source_logits, target_logits]).float(), dim=1).detach()  # (B, C)
        features = features.float()
        if hasattr(self.modules, "r_f"):
            joint = randomized_map(features, predictions, self.modules.r_f, self.modules.r_g)  # (B, d)
        else:
            joint = multilinear_map(features, predictions)  # (B, C * D)
        scores = self.modules["discriminator"](reverse_gradient(joint, grl_coefficient(progress)))  # (B,)
        weights_s = weights_t = None
        if self.params.entropy:
            w = entropy_weights(predictions)
            weights_s, weights_t = w[:n] / w[:n].mean(), w[n:] / w[n:].mean()  # each domain's weights average 1
        return {"cdan": self.params.weight * domain_loss(scores[:n], scores[n:], weights_s, weights_t)}
