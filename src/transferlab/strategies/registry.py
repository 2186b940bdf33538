"""Every strategy registered in one place, and the spec parser: `name[:key=value,...][+name...]`."""
from __future__ import annotations

import dataclasses
import typing

from transferlab.errors import ConfigError
from transferlab.specs import convert_value
from transferlab.strategies.base import Strategy
from transferlab.strategies.compose import ComposedStrategy

_STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    _STRATEGIES[cls.name] = cls
    return cls


def list_strategies() -> list[type[Strategy]]:
    return [_STRATEGIES[n] for n in sorted(_STRATEGIES)]


def describe(cls: type[Strategy]) -> dict:
    """Name, role, help and each parameter's default and help text (for `transferlab strategies`)."""
    params = []
    for f in dataclasses.fields(cls.Params):
        params.append({"name": f.name, "default": f.default, "type": _type_name(cls.Params, f),
                       "help": f.metadata.get("help", "")})
    return {"name": cls.name, "role": cls.role, "help": cls.help, "params": params}


def _type_name(params_cls, f) -> str:
    hint = typing.get_type_hints(params_cls).get(f.name, str)
    return getattr(hint, "__name__", str(hint))


def parse_one(text: str) -> Strategy:
    name, _, arg_text = text.strip().partition(":")
    name = name.strip()
    if name not in _STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}: choose from {', '.join(sorted(_STRATEGIES))}")
    cls = _STRATEGIES[name]
    hints = typing.get_type_hints(cls.Params)
    valid = [f.name for f in dataclasses.fields(cls.Params)]
    kwargs = {}
    if arg_text.strip():
        for item in arg_text.split(","):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key:
                raise ConfigError(f"{name}: expected key=value, got {item!r}")
            if key not in valid:
                raise ConfigError(f"{name}: unknown key {key!r}; valid keys: {', '.join(valid) or '(none)'}")
            if key in kwargs:
                raise ConfigError(f"{name}: key {key!r} given twice")
            kwargs[key] = convert_value(value.strip(), hints[key], name, key)
    try:
        params = cls.Params(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return cls(params)


def parse_strategy(spec: str) -> ComposedStrategy:
    """Parse `discriminative:decay=0.4+l2sp:alpha=0.1,beta=0.01` into one composed strategy."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"empty strategy spec; choose from {', '.join(sorted(_STRATEGIES))}")
    parts = [parse_one(piece) for piece in spec.split("+")]
    if not any(p.role == "selection" for p in parts):
        parts = [parse_one("full")] + parts  # an lr strategy or regulariser alone means everything trains
    return ComposedStrategy(parts)
