"""A run's config and numbers as the flat names and values a tracker logs; both trackers use the same names."""
from __future__ import annotations

import json
import re

RUN_FILES = ("config.json", "history.jsonl", "metrics.json")


def numeric_leaves(obj, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON value, keyed by its path joined with '.': dict keys and list indices
    ({"val": {"accuracy": 0.9}, "skipped_steps": [12]} -> {"val.accuracy": 0.9, "skipped_steps.0": 12.0}).
    Booleans, strings and nulls are not numbers here; NaN and infinities are kept (a diverged run shows them)."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return {}
    if isinstance(obj, (int, float)):
        return {prefix: float(obj)} if prefix else {}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    out: dict[str, float] = {}
    for key, value in items:
        out.update(numeric_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def flat_params(obj: dict, prefix: str = "") -> dict[str, str]:
    """A config as flat string params: nested dicts joined with '.', strings as they are, everything else
    (numbers, booleans, null, lists, an empty dict) as its JSON text, so `true` and `"true"` stay apart."""
    out: dict[str, str] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flat_params(value, name))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return out


_BAD_KEY_CHARS = re.compile(r"[^\w./\- ]")


def safe_key(name: str) -> str:
    """A metric or param name every tracker accepts: letters, digits, '_', '-', '.', ' ', '/' (no ':',
    which Windows MLflow refuses), and no empty path parts (MLflow refuses 'a//b', '/a', 'a/')."""
    name = _BAD_KEY_CHARS.sub("_", name)
    if "//" in name or name.startswith("/") or name.endswith("/") or "/./" in name or "/../" in name:
        name = name.replace("/", "_")
    return name or "_"
