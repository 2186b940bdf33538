"""Every strategy registered in one place, and the spec parser: `name[:key=value,...][+name...]`."""
from __future__ import annotations

import dataclasses
import typing

from transferlab.errors import ConfigError
from transferlab.specs import parse_params
from transferlab.strategies.base import Strategy
from transferlab.strategies.compose import ComposedStrategy

_STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: `cls.name` becomes a strategy spec name. A module of `transferlab.strategies` (or of
    its `peft_methods`) registers by being there: the package imports all of them."""
    _STRATEGIES[cls.name] = cls
    return cls


def unregister_strategy(name: str) -> None:
    """Remove a strategy (tests' toy strategies)."""
    del _STRATEGIES[name]


def list_strategies() -> list[type[Strategy]]:
    return [_STRATEGIES[n] for n in sorted(_STRATEGIES)]


def describe(cls: type[Strategy]) -> dict:
    """Name, role, help and each parameter's default and help text (for `transferlab strategies`)."""
    params = []
    for f in dataclasses.fields(cls.Params):
        params.append({"name": f.name, "default": f.default, "type": _type_name(cls.Params, f),
                       "help": f.metadata.get("help", "")})
    entry = {"name": cls.name, "role": cls.role, "help": cls.help, "params": params}
    if hasattr(cls, "variants"):  # peft:<type>: each type with its config's fields
        entry["params"] = []
        entry["variants"] = cls.variants()
    return entry


def _type_name(params_cls, f) -> str:
    hint = typing.get_type_hints(params_cls).get(f.name, str)
    return getattr(hint, "__name__", str(hint))


def parse_one(text: str) -> Strategy:
    name, _, arg_text = text.strip().partition(":")
    name = name.strip()
    if name not in _STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}: choose from {', '.join(sorted(_STRATEGIES))}")
    cls = _STRATEGIES[name]
    if hasattr(cls, "parse_spec"):  # a spec of its own shape (peft:<type>[:key=value,...])
        return cls.parse_spec(arg_text)
    params = parse_params(name, cls.Params, arg_text)
    return cls(params)


def parse_strategy(spec: str) -> ComposedStrategy:
    """Parse `discriminative:decay=0.4+l2sp:alpha=0.1,beta=0.01` into one composed strategy."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"empty strategy spec; choose from {', '.join(sorted(_STRATEGIES))}")
    parts = [parse_one(piece) for piece in spec.split("+")]
    if not any(p.role == "selection" for p in parts):
        parts = [parse_one("full")] + parts  # an lr strategy or regulariser alone means everything trains
    return ComposedStrategy(parts)
