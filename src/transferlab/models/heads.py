"""Heads: the new, trained part that maps pooled backbone features (B, D) to logits (B, C).

A head is chosen by a spec with the strategies' syntax, `name[:key=value,...]` (`linear`, `mlp:hidden=256`),
from a small registry; `register_head` adds one. A head may add terms to the training loss (`loss_terms`,
empty by default), e.g. an information-bottleneck head's KL term.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from transferlab.errors import ConfigError
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
