"""L2-SP (Li, Grandvalet & Davoine 2018): regularise towards the pre-trained weights, not towards zero.

The pull is a loss term, so its gradient alpha (w - w0) goes through the optimiser like the task's gradient.
Under SGD that is the paper's penalty exactly. Under Adam(W) every coordinate's gradient is divided by its own
running RMS, so the pull's effective strength differs per coordinate (the reason Loshchilov & Hutter 2019
decouple weight decay from Adam): alpha sets the penalty in the loss, not a uniform decay rate towards w0.
The weights L2-SP anchors get no decoupled weight decay towards 0 (`anchored_parameters`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from transferlab.strategies.base import Strategy, Tunable
from transferlab.strategies.registry import register_strategy


@register_strategy
class L2SP(Strategy):
    name = "l2sp"
    role = "regularizer"
    help = ("Li et al. 2018: alpha/2 * ||w - w0||^2 over trainable pre-trained weights (w0: their pre-trained "
            "values) plus beta/2 * ||w||^2 over new parameters (the head, LoRA, adapters).")

    @dataclass
    class Params:
        alpha: float = field(default=0.1, metadata={"help": "strength of the pull towards pre-trained weights"})
        beta: float = field(default=0.01, metadata={"help": "L2 strength on new parameters"})

        def __post_init__(self):
            if self.alpha < 0 or self.beta < 0:
                raise ValueError("alpha and beta must be >= 0")

    @classmethod
    def search_space(cls, ctx):
        return {"alpha": Tunable(1e-4, 1.0, log=True), "beta": Tunable(1e-4, 0.1, log=True)}

    def __init__(self, params=None):
        super().__init__(params)
        self.reference: dict[str, torch.Tensor] = {}

    def on_fit_start(self, model, ctx):
        # Called on the pre-trained model, before any checkpoint is loaded: these are w0.
        self.reference = {n: p.detach().clone() for n, p in model.named_parameters() if not model.is_new_param(n)}

    def anchored_parameters(self, model):
        return set(self.reference)

    def loss_terms(self, model, batch, logits):
        pull = logits.new_zeros(())
        decay = logits.new_zeros(())
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if name in self.reference:
                pull = pull + (p - self.reference[name]).pow(2).sum()
            else:
                decay = decay + p.pow(2).sum()
        return {"l2sp_pull": 0.5 * self.params.alpha * pull, "l2sp_new": 0.5 * self.params.beta * decay}

    def state_dict(self):
        return {}  # w0 is rebuilt from the pre-trained weights on resume
