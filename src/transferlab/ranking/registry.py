"""The transferability metrics, each registered once: `transferlab rank --metrics` and the report read them here.

A metric is one file in `transferlab/ranking/metrics/` whose score function is decorated:

    from transferlab.ranking.registry import MetricInput, register_metric

    @register_metric("toy", paper="Someone et al., 2024", help="what it measures", needs_source=False)
    def toy(inputs: MetricInput) -> float:        # or a Score (with per-example correctness), higher is better
        ...

A function raises `Skipped(reason)` when it cannot score a candidate (one class has a single example, ...): the
table and ranking.json show the reason instead of a number. A metric with `needs_source` reads the candidate's
source-head probabilities and is skipped (reason "no source head") for a candidate without one. `load_all()`
imports every public module of `transferlab.ranking.metrics`, so a metric registers by being there.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

NO_SOURCE_HEAD = "no source head"


class Skipped(Exception):
    """A metric that cannot score this candidate; the message says why (shown in place of the score)."""


@dataclass
class MetricOptions:
    """Settings the metrics read; every field has a default and a help text (the CLI builds its flags from them)."""

    k: int = field(default=5, metadata={"help": "kNN: neighbours per vote (leave-one-out)."})
    knn_metric: str = field(default="euclidean", metadata={
        "help": "kNN: distance on the standardised features, euclidean or cosine."})
    folds: int = field(default=5, metadata={
        "help": "linear: stratified folds of the cross-validated logistic regression (fewer when a class has "
                "fewer examples)."})
    seed: int = field(default=0, metadata={"help": "Seed of the subsample and of the linear metric's folds."})

    def __post_init__(self) -> None:
        from transferlab.errors import ConfigError

        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"--k must be a whole number of at least 1, got {self.k!r}")
        if self.knn_metric not in ("euclidean", "cosine"):
            raise ConfigError(f"--knn-metric must be euclidean or cosine, got {self.knn_metric!r}")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise ConfigError(f"--folds must be a whole number of at least 2, got {self.folds!r}")


@dataclass
class MetricInput:
    """What a metric scores: one candidate's features on the target examples."""

    features: np.ndarray  # (N, D) float64: pooled penultimate features (or one depth group's pooled output)
    labels: np.ndarray  # (N,) int64 target classes 0..C-1
    source_probs: np.ndarray | None = None  # (N, S) float64 softmax of the source head; None without one
    options: MetricOptions = field(default_factory=MetricOptions)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if self.labels.size else 0


@dataclass
class Score:
    """A metric's value; accuracy metrics also give each example's correctness (0/1, in example order), which the
    report compares between candidates with McNemar's test (`transferlab.stats`)."""

    value: float
    correct: np.ndarray | None = None


@dataclass(frozen=True)
class Metric:
    name: str  # `--metrics NAME`
    function: Callable[[MetricInput], "float | Score"]
    paper: str  # the citation shown in the report
    help: str  # one line: what it measures
    needs_source: bool = False  # reads the source head's probabilities (LEEP, NCE)
    accuracy: bool = False  # its value is an accuracy with per-example correctness (kNN, linear)

    def score(self, inputs: MetricInput) -> Score:
        """The metric on `inputs`; Skipped when it cannot be computed (no source head, too few examples)."""
        if self.needs_source and inputs.source_probs is None:
            raise Skipped(NO_SOURCE_HEAD)
        out = self.function(inputs)
        return out if isinstance(out, Score) else Score(float(out))


_METRICS: dict[str, Metric] = {}


def register_metric(name: str, paper: str, help: str, needs_source: bool = False, accuracy: bool = False):
    """Decorator of a metric's score function `(MetricInput) -> float | Score` (higher is better)."""

    def wrap(fn):
        if name in _METRICS and _METRICS[name].function is not fn:
            raise ValueError(f"a metric named {name!r} is already registered")
        _METRICS[name] = Metric(name, fn, paper, help, needs_source, accuracy)
        return fn

    return wrap


def unregister_metric(name: str) -> None:
    """Remove a metric (a test's toy metric)."""
    _METRICS.pop(name, None)


def load_all() -> None:
    """Import every public module of `transferlab.ranking.metrics`: each metric registers on import."""
    import transferlab.ranking.metrics as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")


DEFAULT_ORDER = ("logme", "leep", "nce", "hscore", "knn", "linear")


def list_metrics() -> list[Metric]:
    """Every registered metric: the built-in ones in DEFAULT_ORDER, then the others by name."""
    load_all()
    order = {name: i for i, name in enumerate(DEFAULT_ORDER)}
    return sorted(_METRICS.values(), key=lambda m: (order.get(m.name, len(order)), m.name))


def get_metric(name: str) -> Metric:
    load_all()
    return _METRICS[name]


def parse_metrics(text: str | None) -> list[Metric]:
    """`--metrics logme,knn` as metrics, in the order given; None: every registered metric. ConfigError (one line)
    for an unknown or repeated name."""
    from transferlab.errors import ConfigError

    known = {m.name: m for m in list_metrics()}
    if text is None:
        return list(known.values())
    names = [n.strip() for n in str(text).split(",")]
    if not names or any(not n for n in names):
        raise ConfigError(f"--metrics {text!r}: give comma-separated names from {', '.join(known)}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--metrics: unknown metric {unknown[0]!r}; known: {', '.join(known)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"--metrics names {', '.join(repeated)} more than once")
    return [known[n] for n in names]
