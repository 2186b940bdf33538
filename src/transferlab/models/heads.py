"""Heads: the new, trained part that maps pooled backbone features (B, D) to logits (B, C).

A head is chosen by a spec with the strategies' syntax, `name[:key=value,...]` (`linear`, `mlp:hidden=256`,
`vib:dim=384,beta=1e-5`), from a small registry; `register_head` adds one. A head may add terms to the training
loss (`loss_terms`, empty by default), e.g. the information-bottleneck head's KL term.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.errors import ConfigError

# A head's width (mlp hidden, vib dim) above this is a typo, not a model: 65536 wide already costs D x 65536 weights
# (3 GB of float32 with a 12288-wide transformer), and 1e9 would be an allocation failure, not a refusal.
MAX_WIDTH = 65536
WIDTH_REASON = "wider is a typo: the head's weight matrices would not fit in memory"
from transferlab.specs import parse_params

DEFAULT_HEAD = "linear"


class Head(nn.Module):
    """Base of every head: `forward(features (B, D)) -> logits (B, C)`.

    Subclasses declare a `Params` dataclass (every field with a default) and are built as
    `cls(in_features, num_classes, params)`; `in_features` and `out_features` are always set.
    """

    name: ClassVar[str] = ""

    @dataclasses.dataclass
    class Params:
        pass

    params: Params

    def loss_terms(self, features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Extra loss terms (name -> scalar) from the last forward pass; none by default."""
        return {}

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        """Called by the trainer before each training epoch (0-based), also on resume: a head whose loss depends
        on training progress (KL annealing) derives it from the epoch alone, so a resumed run matches."""

    def spec(self) -> str:
        """The spec that rebuilds this head: name plus the parameters that differ from their defaults."""
        defaults = type(self).Params()
        items = [f"{f.name}={getattr(self.params, f.name)}" for f in dataclasses.fields(self.params)
                 if getattr(self.params, f.name) != getattr(defaults, f.name)]
        return self.name + (":" + ",".join(items) if items else "")


_HEADS: dict[str, type[Head]] = {}


def register_head(cls: type[Head]) -> type[Head]:
    _HEADS[cls.name] = cls
    return cls


def list_heads() -> list[str]:
    return sorted(_HEADS)


@register_head
class LinearHead(nn.Linear, Head):
    """One linear layer (today's head). A subclass of nn.Linear, so its tensors stay `head.weight`,
    `head.bias` and checkpoints and task modules written before heads were pluggable still load."""

    name = "linear"

    @dataclasses.dataclass
    class Params:
        pass

    def __init__(self, in_features: int, num_classes: int, params: Params | None = None):
        super().__init__(in_features, num_classes)
        self.params = params or self.Params()


@register_head
class MLPHead(Head):
    """Linear -> GELU -> Dropout -> Linear."""

    name = "mlp"

    @dataclasses.dataclass
    class Params:
        hidden: int = 256  # width of the hidden layer
        dropout: float = 0.0  # dropout on the hidden layer

        def __post_init__(self):
            if self.hidden < 1:
                raise ValueError(f"hidden must be at least 1, got {self.hidden}")
            if self.hidden > MAX_WIDTH:
                raise ValueError(f"hidden must be at most {MAX_WIDTH}, got {self.hidden} ({WIDTH_REASON})")
            if not 0.0 <= self.dropout < 1.0:
                raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def __init__(self, in_features: int, num_classes: int, params: Params | None = None):
        super().__init__()
        self.params = params or self.Params()
        self.in_features, self.out_features = in_features, num_classes
        self.fc1 = nn.Linear(in_features, self.params.hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(self.params.dropout)
        self.fc2 = nn.Linear(self.params.hidden, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(features))))  # (B, D) -> (B, hidden) -> (B, C)


def gaussian_kl(mu_q: torch.Tensor, std_q: torch.Tensor, mu_p: torch.Tensor, std_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, diag std_q^2) || N(mu_p, diag std_p^2)) per row: (B, K) tensors (the prior's broadcast) -> (B,).

    0.5 * sum_k [ (std_q^2 + (mu_q - mu_p)^2) / std_p^2 - 1 + 2 log std_p - 2 log std_q ], by torch.distributions
    (no argument validation: a std that underflowed to 0 gives inf, as the formula does, rather than an error)."""
    from torch.distributions import Normal, kl_divergence

    q = Normal(mu_q, std_q, validate_args=False)
    p = Normal(mu_p, std_p, validate_args=False)
    return kl_divergence(q, p).sum(-1)  # (B, K) -> (B,)


@register_head
class VIBHead(Head):
    """A variational information bottleneck between the pooled features and the classifier (Alemi et al.
    2017, "Deep Variational Information Bottleneck"), with the settings of VIBERT (Mahabadi et al. 2021,
    "Variational Information Bottleneck for Effective Low-Resource Fine-Tuning") as defaults:

        h = tanh(W2 tanh(W1 x))                          x (B, D) -> (B, H), H = (D + dim) // 2
        mu = W_mu h,  std = softplus(W_std h)            (B, dim) each
        z = mu + std * eps, eps ~ N(0, I) in training;   z = mu in evaluation (prediction uses the mean)
        logits = W_c z                                    (B, C)
        loss += beta_e * mean_b KL(N(mu, std^2) || N(mu_p, std_p^2))

    The prior N(mu_p, std_p^2) is learnable (`learnable_prior`, VIBERT's choice; started at N(0, I) here, where
    VIBERT draws its start at random). KL annealing `linear` is VIBERT's schedule, beta_e = min(1, e * beta) at
    epoch e = 1, 2, ...; `none` keeps beta. One sample of z per example and step (VIBERT averages the loss over
    several: the trainer's loss reads one (B, C) logits tensor). Written here: PEFT and timm have no such head.
    """

    name = "vib"

    @dataclasses.dataclass
    class Params:
        dim: int = 384  # size of the bottleneck z (VIBERT's ib_dim)
        beta: float = 1e-5  # weight of the KL term
        annealing: str = "linear"  # linear (VIBERT: beta_e = min(1, e * beta)) or none
        learnable_prior: bool = True  # learn the prior's mean and std (VIBERT) or keep N(0, I)

        def __post_init__(self):
            if self.dim < 1:
                raise ValueError(f"dim must be at least 1, got {self.dim}")
            if self.dim > MAX_WIDTH:
                raise ValueError(f"dim must be at most {MAX_WIDTH}, got {self.dim} ({WIDTH_REASON})")
            if not self.beta >= 0.0:
                raise ValueError(f"beta must be >= 0, got {self.beta}")
            if self.annealing not in ("linear", "none"):
                raise ValueError(f"annealing must be linear or none, got {self.annealing!r}")

    def __init__(self, in_features: int, num_classes: int, params: Params | None = None):
        super().__init__()
        self.params = params or self.Params()
        self.in_features, self.out_features = in_features, num_classes
        dim = self.params.dim
        hidden = (in_features + dim) // 2
        self.encoder = nn.Sequential(nn.Linear(in_features, (in_features + hidden) // 2), nn.Tanh(),
                                     nn.Linear((in_features + hidden) // 2, hidden), nn.Tanh())
        self.to_mu = nn.Linear(hidden, dim)
        self.to_std = nn.Linear(hidden, dim)
        # softplus(0.5413) = 1: the prior starts as N(0, I)
        self.prior_mu = nn.Parameter(torch.zeros(dim), requires_grad=self.params.learnable_prior)
        self.prior_std_raw = nn.Parameter(torch.full((dim,), math.log(math.e - 1.0)),
                                          requires_grad=self.params.learnable_prior)
        self.classifier = nn.Linear(dim, num_classes)
        self.epoch = 1  # 1-based, set by on_epoch_start
        self._kl: torch.Tensor | None = None

    def posterior(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, std) of q(z | x), each (B, dim)."""
        h = self.encoder(features)
        return self.to_mu(h), F.softplus(self.to_std(h)).clamp(min=1e-8)

    def prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.prior_mu, F.softplus(self.prior_std_raw).clamp(min=1e-8)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        mu, std = self.posterior(features)
        if self.training:
            z = mu + std * torch.randn_like(std)
            self._kl = gaussian_kl(mu, std, *self.prior()).mean()
        else:
            z, self._kl = mu, None
        return self.classifier(z)

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        self.epoch = epoch + 1

    def kl_weight(self) -> float:
        if self.params.annealing == "linear":
            return min(1.0, self.epoch * self.params.beta)
        return self.params.beta

    def loss_terms(self, features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{"vib_kl": beta_e * KL} after a training forward pass; nothing in evaluation."""
        if self._kl is None:
            return {}
        kl, self._kl = self._kl, None  # read once per step; no graph is kept past it
        return {"vib_kl": self.kl_weight() * kl}


def parse_head(spec: str) -> tuple[type[Head], Head.Params]:
    """`mlp:hidden=256,dropout=0.1` -> (MLPHead, its Params); a bad spec is a one-line ConfigError."""
    name, _, arg_text = (spec or "").strip().partition(":")
    name = name.strip()
    if name not in _HEADS:
        raise ConfigError(f"unknown head {name!r}: choose from {', '.join(list_heads())}")
    cls = _HEADS[name]
    return cls, parse_params(f"head {name}", cls.Params, arg_text)


def build_head(spec: str, in_features: int, num_classes: int) -> Head:
    """A new head from its spec, mapping (B, in_features) to (B, num_classes)."""
    cls, params = parse_head(spec)
    return cls(in_features, num_classes, params)


def linear_weights(head: nn.Module, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (C, D), bias (C,)) of a linear head; anything else cannot stand in for a linear classifier,
    so `what` (the feature that needs one, e.g. "--head-init source") is refused with a ConfigError."""
    if not isinstance(head, LinearHead) and type(head) is not nn.Linear:
        spec = head.spec() if isinstance(head, Head) else type(head).__name__
        raise ConfigError(f"{what} needs a linear head, this model's head is {spec!r}")
    return head.weight, head.bias
