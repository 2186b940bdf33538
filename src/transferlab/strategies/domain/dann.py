"""DANN: domain-adversarial training (Ganin et al. 2016, JMLR, "Domain-Adversarial Training of Neural Networks")."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from transferlab.strategies.base import Tunable
from transferlab.strategies.domain._common import DomainDiscriminator, DomainStrategy, domain_loss, \
    grl_coefficient, reverse_gradient
from transferlab.strategies.registry import register_strategy


@register_strategy
class DANN(DomainStrategy):
    name = "dann"
    help = ("Ganin et al. 2016: a domain discriminator (an MLP) on the backbone's pooled features, behind a "
            "gradient-reversal layer whose coefficient follows 2/(1+exp(-10p))-1 over training progress p: the "
            "discriminator learns to tell source from target batches, the features learn to make them alike. "
            "Needs --target-data (unlabelled).")

    @dataclass
    class Params:
        weight: float = field(default=1.0, metadata={"help": "weight of the domain-adversarial loss"})
        hidden: int = field(default=1024, metadata={"help": "width of the discriminator's two hidden layers"})

        def __post_init__(self):
            if self.weight < 0:
                raise ValueError("weight must be >= 0")
            if self.hidden < 1:
                raise ValueError("hidden must be >= 1")

    @classmethod
    def search_space(cls, ctx):
        return {"weight": Tunable(0.1, 3.0, log=True)}

    def build(self, model):
        return nn.ModuleDict({"discriminator": DomainDiscriminator(model.feature_dim, self.params.hidden)})

    def domain_terms(self, source_features, source_logits, target_features, target_logits, progress):
        coeff = grl_coefficient(progress)
        features = reverse_gradient(torch.cat([source_features, target_features]), coeff)  # (Bs + Bt, D)
        scores = self.modules["discriminator"](features)  # (Bs + Bt,)
        n = source_features.shape[0]
        return {"dann": self.params.weight * domain_loss(scores[:n], scores[n:])}
