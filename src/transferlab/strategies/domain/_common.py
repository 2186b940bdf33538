"""What the domain adaptation strategies share.

- `reverse_gradient(x, coeff)`: the gradient-reversal layer of Ganin et al. (identity forward, -coeff * grad
  backward), and `grl_coefficient(p)`, their schedule 2 / (1 + exp(-10 p)) - 1 over training progress p.
- `DomainDiscriminator`: the small MLP that tells source features from target features (one logit).
- `DomainStrategy`: the base class. Each step it sees the source batch's pooled features (the head's input in the
  training forward, captured by a hook, as LwF does) and the target batch's features and logits (one forward of
  the target batch per step, shared by every domain strategy of a spec: `dann+mcc` forwards it once). Its own
  modules (a discriminator, CDAN's random matrices) live outside the model: in the optimiser through
  `own_parameters`, in the checkpoint through `state_dict`, never in the saved model weights.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn as nn

from transferlab.strategies.base import Strategy

_MEMO = "_domain_outputs"  # key of a step's (source features, target features, target logits) in its target batch


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.coeff * grad, None


def reverse_gradient(x: torch.Tensor, coeff: float) -> torch.Tensor:
    """x unchanged; in the backward pass the gradient times -coeff (the features learn to confuse the
    discriminator that learns, through the same loss, to tell the domains apart)."""
    return _GradientReversal.apply(x, float(coeff))


def grl_coefficient(progress: float) -> float:
    """Ganin et al. 2016's lambda_p = 2 / (1 + exp(-10 p)) - 1: 0 at the start, near 1 from p = 0.5 on, so the
    discriminator's noisy early signal does not disturb the features."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


class DomainDiscriminator(nn.Sequential):
    """(B, in_features) -> (B,) logits of 'source': Linear-ReLU-Linear-ReLU-Linear, the 3-layer classifier of
    Ganin et al. (without dropout, so a step draws no random numbers of its own)."""

    def __init__(self, in_features: int, hidden: int):
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).squeeze(-1)


def domain_loss(source_logits: torch.Tensor, target_logits: torch.Tensor,
                source_weights: torch.Tensor | None = None, target_weights: torch.Tensor | None = None
                ) -> torch.Tensor:
    """Binary cross-entropy of the discriminator, source = 1 and target = 0, each domain's (weighted) mean and the
    two averaged, so unequal batch sizes weigh the domains alike."""
    bce = nn.functional.binary_cross_entropy_with_logits
    s = bce(source_logits.float(), torch.ones_like(source_logits, dtype=torch.float32), reduction="none")
    t = bce(target_logits.float(), torch.zeros_like(target_logits, dtype=torch.float32), reduction="none")
    if source_weights is not None:
        s, t = s * source_weights, t * target_weights
    return 0.5 * (s.mean() + t.mean())


class DomainStrategy(Strategy):
    """A regulariser whose loss also reads an unlabelled target batch (`needs_target`). Subclasses build their
    modules in `build(model)` (into `self.modules`, an nn.ModuleDict) and compute `domain_terms`."""

    role: ClassVar[str] = "regularizer"
    reads_inputs: ClassVar[bool] = True  # the target batch is raw inputs: the frozen-prefix cache stays off
    needs_target: ClassVar[bool] = True

    def __init__(self, params=None):
        super().__init__(params)
        self.modules: nn.ModuleDict | None = None
        self._features: torch.Tensor | None = None
        self._handle = None

    # ---- the hooks ----------------------------------------------------------------------------
    def on_fit_start(self, model, ctx):
        if self._handle is not None:
            self._handle.remove()
        self._handle = model.head.register_forward_pre_hook(self._capture)
        # The modules start from the run's seed alone (not from what the process drew before): a resumed run
        # builds the same ones before its checkpoint's values are copied in.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed + 7919)
            self.modules = self.build(model)
        self.modules.to(ctx.device)

    def _capture(self, module, inputs):
        self._features = inputs[0]

    def build(self, model) -> nn.ModuleDict:
        return nn.ModuleDict()

    def own_parameters(self):
        return [] if self.modules is None else list(self.modules.named_parameters())

    def target_loss_terms(self, model, batch, logits, target, progress):
        source_features, target_features, target_logits = self._outputs(model, target)
        return self.domain_terms(source_features, logits, target_features, target_logits, progress)

    def domain_terms(self, source_features, source_logits, target_features, target_logits,
                     progress: float) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _outputs(self, model, target: dict):
        """(source features (Bs, D), target features (Bt, D), target logits (Bt, C)) of this step: the target
        batch forwarded once per step, whichever domain strategy asks first."""
        if _MEMO not in target:
            source = self._features  # the training forward's head input, before the target forward replaces it
            target_logits = model(target)
            target[_MEMO] = (source, self._features, target_logits)
        return target[_MEMO]

    # ---- state: the modules' tensors ----------------------------------------------------------
    def state_dict(self):
        return {} if self.modules is None else {k: v.detach().clone() for k, v in self.modules.state_dict().items()}

    def load_state_dict(self, state):
        if self.modules is None:
            raise ValueError(f"{self.name}: its modules are built in on_fit_start, before a checkpoint loads")
        if len(self.modules.state_dict()) and not state:
            raise ValueError(f"the checkpoint holds no {self.name} discriminator")
        self.modules.load_state_dict(state, strict=True)  # copied in place: the optimiser keeps its parameters
