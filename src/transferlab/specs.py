"""Specs like `name:key=value,...` (strategies, heads): turning a value's text into its Params field type."""
from __future__ import annotations

from transferlab.errors import ConfigError


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
            return int(raw)
        if hint is float:
            value = float(raw)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
            return value
        return raw
    except ValueError:
        raise ConfigError(f"{owner}: {key}={raw!r} is not a valid {getattr(hint, '__name__', hint)}") from None
