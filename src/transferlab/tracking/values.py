"""What a finished run folder holds, as the flat names and values a tracker logs.

Both trackers log the same numbers, read back from the files the run wrote (config.json, history.jsonl,
metrics.json), so a run trained in another process or on another machine is logged exactly as one trained here.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

RUN_FILES = ("config.json", "history.jsonl", "metrics.json")
EPOCH_PREFIX = "epoch_"  # a per-epoch field that metrics.json also has (trainable_params, samples_per_second)


@dataclass
class RunValues:
    """A finished run, flattened: params (strings), per-epoch series and final numbers."""

    folder: Path
    params: dict[str, str]
    epochs: list[tuple[int, dict[str, float]]]  # (epoch, {name: value}) in history order; epoch is the step
    final: dict[str, float]  # every numeric leaf of metrics.json
    digest: str  # sha256 of metrics.json: the run's identity when a grid is logged again


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


def read_history(folder: Path) -> list[dict]:
    path = folder / "history.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def epoch_series(history: list[dict], final_keys: set[str]) -> list[tuple[int, dict[str, float]]]:
    """(epoch, numbers) per history record; a field metrics.json also has is renamed epoch_<field>, so that
    one name never means both a per-epoch value and the run's final one."""
    series = []
    for position, record in enumerate(history, start=1):
        step = int(record.get("epoch", position))
        values = numeric_leaves({k: v for k, v in record.items() if k != "epoch"})
        series.append((step, {(EPOCH_PREFIX + safe_key(k) if safe_key(k) in final_keys else safe_key(k)): v
                              for k, v in values.items()}))
    return series


def run_values(folder: str | Path) -> RunValues:
    """The flattened contents of a finished run folder (metrics.json present)."""
    folder = Path(folder)
    metrics_bytes = (folder / "metrics.json").read_bytes()
    metrics = json.loads(metrics_bytes)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else metrics.get("config", {})
    final = {safe_key(k): v for k, v in numeric_leaves(metrics).items()}
    return RunValues(folder=folder, params={safe_key(k): v for k, v in flat_params(config).items()},
                     epochs=epoch_series(read_history(folder), set(final)), final=final,
                     digest=hashlib.sha256(metrics_bytes).hexdigest())


