"""Is a difference between two accuracies larger than its uncertainty? One rule, used by every flag and every
"best" sentence of the comparison report.

The rule: a difference counts when it exceeds Z_THRESHOLD = 2 standard errors of the difference,

    se_diff = sqrt(se_a^2 + se_b^2),   se = sqrt(se_binomial^2 + se_seeds^2)  for each accuracy,
    se_binomial = sqrt(p (1 - p) / n)   (n: examples evaluated),
    se_seeds    = sample std over the k seeds / sqrt(k)   (0 with one seed).

Why: an accuracy has two independent sources of noise, which examples happen to be in the evaluation split
(binomial; every seed scores the same split, so more seeds do not shrink it) and the training randomness
(seed spread), so they add in quadrature. Treating the two strategies as independent ignores that they are
scored on the same images (a paired test would give a narrower band, but per-example predictions are not kept),
so the rule errs towards "within noise". 2 standard errors is about a two-sided 95% normal interval.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

Z_THRESHOLD = 2.0
RULE = ("a difference counts when it exceeds 2 standard errors of the difference, sqrt(se_a² + se_b²), where each "
        "accuracy's se combines the binomial error sqrt(p(1-p)/n) on its n evaluated examples and the standard "
        "error of the mean over seeds")


@dataclass(frozen=True)
class Accuracy:
    """An accuracy as a mean over `seeds` runs, each scored on `n` examples, with the sample std over seeds."""

    mean: float
    n: int | None  # examples evaluated (metrics.json val.n / test.n); None: unknown
    seeds: int = 1
    seed_std: float = 0.0

    @classmethod
    def of(cls, values: list[float], n: int | None) -> "Accuracy":
        """From the per-seed accuracies."""
        k = len(values)
        mean = sum(values) / k
        std = math.sqrt(sum((x - mean) ** 2 for x in values) / (k - 1)) if k > 1 else 0.0
        return cls(mean, n, k, std)

    @property
    def se_binomial(self) -> float:
        if not self.n or self.n <= 0:
            return math.inf  # unknown sample size: the accuracy could be anything near its value
        p = min(max(self.mean, 0.0), 1.0)
        return math.sqrt(p * (1 - p) / self.n)

    @property
    def se_seeds(self) -> float:
        return (self.seed_std or 0.0) / math.sqrt(self.seeds) if self.seeds > 1 else 0.0

    @property
    def se(self) -> float:
        return math.hypot(self.se_binomial, self.se_seeds)


@dataclass(frozen=True)
class Difference:
    """a - b with its standard error; `significant` when |difference| > Z_THRESHOLD * se."""

    a: float
    b: float
    difference: float
    se: float
    z: float  # difference / se (inf when se is 0 and the difference is not)
    significant: bool

    @property
    def band(self) -> str:
        """'+0.007 ± 0.027'."""
        return f"{self.difference:+.3f} ± {self.se:.3f}"

    @property
    def text(self) -> str:
        """'difference +0.073 ± 0.022' beyond noise, else 'within noise (+0.007 ± 0.027)'."""
        return f"difference {self.band}" if self.significant else f"within noise ({self.band})"

    def to_dict(self) -> dict:
        return {**asdict(self), "text": self.text}


def compare_accuracies(a: Accuracy, b: Accuracy, threshold: float = Z_THRESHOLD) -> Difference:
    """Whether a.mean - b.mean is larger than its uncertainty (module docstring: the rule)."""
    diff = a.mean - b.mean
    se = math.hypot(a.se, b.se)
    if se == 0:  # both exactly 0 or 1 with one seed: no spread to weigh against
        z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
    else:
        z = diff / se
    return Difference(a.mean, b.mean, diff, se, z, abs(z) > threshold)
