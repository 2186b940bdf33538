"""What `--tune` searches: each strategy's declared space (`Strategy.search_space`), the learning rate and weight
decay every strategy gets, the from-scratch baseline's, and `--tune-space` overrides. No Optuna here: the
engine (compare/tune.py) turns these `Tunable`s into distributions.

Parameter names in a study: `lr`, `weight_decay`, `<strategy>.<param>` (e.g. `l2sp.alpha`), `bn_stats` (scratch).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field

from transferlab.errors import ConfigError
from transferlab.strategies.base import SpaceContext, Tunable

SCRATCH = "scratch"
COMMON = ("lr", "weight_decay")  # searched for every strategy (training options, not strategy parameters)
LR_FACTOR = 10.0  # the learning rate is searched from lr/10 to lr*10, log-uniform, around the grid's
WEIGHT_DECAY_RANGE = Tunable(1e-5, 0.1, log=True)
SPACE_SYNTAX = "strategy:param=low..high[:log] or strategy:param=a|b|c, items separated by ','"


@dataclass
class TuneSpec:
    """`--tune TRIALS` and `--tune-space TEXT`: every strategy (and the baseline) gets `trials` trials."""

    trials: int
    space: str = ""
    overrides: dict = field(default_factory=dict, repr=False, compare=False)  # parse_space(space)

    def __post_init__(self):
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise ConfigError(f"--tune must be an integer >= 1 (trials per strategy), got {self.trials!r}")
        self.space = (self.space or "").strip()
        self.overrides = parse_space(self.space)

    def to_dict(self) -> dict:
        return {"trials": self.trials, "space": self.space}

    @classmethod
    def from_dict(cls, d: dict | None) -> "TuneSpec | None":
        return None if not d else cls(trials=d["trials"], space=d.get("space", ""))


def parse_space(text: str) -> dict[str, dict[str, Tunable]]:
    """`l2sp:alpha=1e-4..1:log,beta=1e-3..0.1:log,lora:r=4|8` -> {"l2sp": {"alpha": ..., "beta": ...}, "lora":
    {"r": ...}}; an item without `strategy:` continues the previous strategy. Checked against the strategy
    registry (names, parameters, their types); a fault is one ConfigError line."""
    from transferlab.strategies.registry import _STRATEGIES

    out: dict[str, dict[str, Tunable]] = {}
    current = None
    for item in filter(None, (p.strip() for p in (text or "").split(","))):
        key, eq, value = item.partition("=")
        if ":" in key:
            current, _, key = key.partition(":")
            current = current.strip()
        key = key.strip()
        if not eq or not key or current is None:
            raise ConfigError(f"--tune-space: cannot read {item!r}; expected {SPACE_SYNTAX}")
        if current != SCRATCH and current not in _STRATEGIES:
            raise ConfigError(f"--tune-space: unknown strategy {current!r} in {item!r}; choose from "
                              f"{', '.join(sorted([*_STRATEGIES, SCRATCH]))}")
        hint = _param_type(current, key)
        if key in out.get(current, {}):
            raise ConfigError(f"--tune-space: {current}:{key} given twice")
        out.setdefault(current, {})[key] = _parse_range(current, key, value.strip(), hint)
    return out


def _param_type(strategy: str, key: str):
    from transferlab.strategies.registry import _STRATEGIES

    if key in COMMON:
        return float
    if strategy == SCRATCH:
        if key == "bn_stats":
            return str
        raise ConfigError(f"--tune-space: scratch has lr, weight_decay and bn_stats, not {key!r}")
    params = _STRATEGIES[strategy].Params
    names = [f.name for f in dataclasses.fields(params)]
    if key not in names:
        raise ConfigError(f"--tune-space: {strategy} has no parameter {key!r}; it has "
                          f"{', '.join([*COMMON, *names])}")
    return typing.get_type_hints(params)[key]


def _parse_range(strategy: str, key: str, raw: str, hint) -> Tunable:
    where = f"--tune-space {strategy}:{key}={raw}"
    try:
        if "|" in raw or (hint not in (int, float) and ".." not in raw):  # choices (one: fixed)
            choices = tuple(_convert(c.strip(), hint, where) for c in raw.split("|"))
            if len(set(choices)) != len(choices):
                raise ConfigError(f"{where}: a choice is listed twice")
            return Tunable(choices=choices)
        body, log = (raw[:-4], True) if raw.endswith(":log") else (raw, False)
        low_text, dots, high_text = body.partition("..")
        if not dots or hint not in (int, float):
            raise ConfigError(f"{where}: expected low..high[:log]" + ("" if hint in (int, float) else
                                                                      " (this parameter takes a|b|c choices)"))
        low, high = _convert(low_text.strip(), hint, where), _convert(high_text.strip(), hint, where)
        return Tunable(low, high, log=log)
    except ConfigError:
        raise
    except ValueError as exc:  # Tunable's own checks
        raise ConfigError(f"{where}: {exc}") from None


def _convert(raw: str, hint, where: str):
    from transferlab.specs import convert_value

    value = convert_value(raw, hint, where, "value")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {raw!r} is not a finite number")
    return value


# ---- the space of one grid entry ---------------------------------------------------------------------------
def spec_parts(spec: str) -> list[tuple[str, set[str]]]:
    """The strategies a spec names, each with the parameters the spec sets itself (those stay fixed):
    `freeze:k=4+l2sp` -> [("freeze", {"k"}), ("l2sp", set())]."""
    out = []
    for piece in spec.split("+"):
        name, _, args = piece.strip().partition(":")
        keys = {a.partition("=")[0].strip() for a in args.split(",") if a.strip()}
        out.append((name.strip(), keys))
    return out


def strategy_space(spec: str, ctx: SpaceContext, lr: float, overrides: dict | None = None) -> dict[str, Tunable]:
    """Every parameter `--tune` searches for the grid entry `spec`, by study name: lr and weight_decay, then each
    named strategy's declared space minus what the spec fixes, with `--tune-space` overrides applied."""
    from transferlab.strategies.registry import _STRATEGIES

    overrides = overrides or {}
    space = common_space(lr)
    for name, fixed in spec_parts(spec):
        declared = dict(_STRATEGIES[name].search_space(ctx))
        for key, tunable in overrides.get(name, {}).items():
            if key in fixed:
                raise ConfigError(f"--tune-space: {name}:{key} is fixed by the strategy spec {spec!r}; drop it "
                                  "from the spec to search it")
            if key in COMMON:
                space[key] = tunable
            else:
                declared[key] = tunable
        for key, tunable in declared.items():
            if key not in fixed:
                space[f"{name}.{key}"] = tunable
    return space


def common_space(lr: float) -> dict[str, Tunable]:
    return {"lr": Tunable(lr / LR_FACTOR, lr * LR_FACTOR, log=True), "weight_decay": WEIGHT_DECAY_RANGE}


def scratch_space(lr: float, overrides: dict | None = None) -> dict[str, Tunable]:
    """The baseline's: lr, weight decay and its BatchNorm statistics mode (what its 4-recipe search chose)."""
    space = {**common_space(lr), "bn_stats": Tunable(choices=("frozen", "auto"))}
    space.update((overrides or {}).get(SCRATCH, {}))
    return space


def check_overrides(overrides: dict, strategies: list[str], scratch: bool) -> None:
    """Every strategy `--tune-space` names is in the grid (a typo would otherwise tune nothing)."""
    named = {name for spec in strategies for name, _ in spec_parts(spec)} | ({SCRATCH} if scratch else set())
    unknown = sorted(set(overrides) - named)
    if unknown:
        raise ConfigError(f"--tune-space names {', '.join(unknown)}, not among the grid's strategies "
                          f"({', '.join(sorted(named))})")
    for spec in strategies:
        for name, fixed in spec_parts(spec):
            both = sorted(fixed & set(overrides.get(name, {})))
            if both:
                raise ConfigError(f"--tune-space: {name}:{both[0]} is fixed by the strategy spec {spec!r}; drop it "
                                  "from the spec to search it")


def apply_params(spec: str, params: dict) -> str:
    """The strategy spec with a trial's `<strategy>.<param>` values set: `l2sp` + {"l2sp.alpha": 0.01} ->
    `l2sp:alpha=0.01` (the canonical spec: every non-default parameter)."""
    from transferlab.specs import parse_params
    from transferlab.strategies.registry import _STRATEGIES

    pieces = []
    for piece in spec.split("+"):
        name, _, args = piece.strip().partition(":")
        cls = _STRATEGIES[name.strip()]
        current = parse_params(name.strip(), cls.Params, args)
        mine = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(name.strip() + ".")}
        try:
            pieces.append(cls(dataclasses.replace(current, **mine)).spec())
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{name}: {exc}") from None
    return "+".join(pieces)
