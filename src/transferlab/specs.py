"""Specs like `name:key=value,...` (strategies, heads): turning a value's text into its Params field type."""
from __future__ import annotations

import dataclasses
import re
import typing

from transferlab.errors import ConfigError


# Plain ASCII numbers only: Python's int() and float() also take "1_0" (read as 10), other scripts' digits and
# surrounding spaces, so a typo such as freeze:k=1_0 would silently become k=10.
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_params(owner: str, params_cls, arg_text: str):
    """`key=value,key=value` -> an instance of the Params dataclass `params_cls`; every fault is one ConfigError
    line that starts with `owner` (a strategy or head name)."""
    hints = typing.get_type_hints(params_cls)
    valid = [f.name for f in dataclasses.fields(params_cls)]
    kwargs = {}
    if arg_text.strip():
        for item in arg_text.split(","):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key:
                raise ConfigError(f"{owner}: expected key=value, got {item!r}")
            if key not in valid:
                raise ConfigError(f"{owner}: unknown key {key!r}; valid keys: {', '.join(valid) or '(none)'}")
            if key in kwargs:
                raise ConfigError(f"{owner}: key {key!r} given twice")
            kwargs[key] = convert_value(value.strip(), hints[key], owner, key)
    try:
        return params_cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{owner}: {exc}") from None


def convert_value(raw: str, hint, owner: str, key: str):
    """A spec's `key=raw` as the Params field type `hint` wants (bool, int, finite float, str); `owner` names
    the strategy or head in the one-line error."""
    try:
        if hint is bool:
            if raw.lower() in ("true", "1", "yes"):
                return True
            if raw.lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if hint is int:
            if not _INT.fullmatch(raw):
                raise ValueError
            return int(raw)
        if hint is float:
            if not _FLOAT.fullmatch(raw):
                raise ValueError
            value = float(raw)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
            return value
        return raw
    except ValueError:
        digits = " (write digits without '_')" if "_" in raw else ""
        raise ConfigError(f"{owner}: {key}={raw!r} is not a valid {getattr(hint, '__name__', hint)}{digits}") from None
