"""How a lab's verdict comes from its numbers, never written in advance.

A lab measures one or more checks. A check is a list of values, one per seed (or per independent unit), signed
so that a positive value is what the claim predicts (e.g. "validation accuracy of L2-SP minus that of plain L2").
Each check is decided by its mean against its standard error over the values:

    supported       mean / se >  T        (the claim's direction, beyond the noise)
    not supported   mean / se < -T        (the opposite direction, beyond the noise)
    mixed           otherwise             (a difference smaller than its noise)

with T = 2 (about a 95% two-sided interval for a mean). With all values equal (se = 0) the sign decides; with a
single value there is no spread to judge by, and the check is mixed. The lab is supported when every check is,
not supported when every check is not, and mixed otherwise.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field

THRESHOLD = 2.0
VERDICTS = ("supported", "not supported", "mixed")
RULE = (f"each check: mean over its values / standard error > {THRESHOLD:g} is supported, < -{THRESHOLD:g} not "
        f"supported, otherwise mixed (a single value: mixed); the lab: supported when every check is, not "
        f"supported when every check is, mixed otherwise")


@dataclass
class Check:
    """One measured sub-claim: `values` signed so that positive supports `claim`."""

    name: str
    claim: str  # what a positive value means, in words
    values: list[float]
    unit: str = ""
    per: str = "seed"  # what one value is: a seed, a depth group, a severity ...
    stats: dict = field(default_factory=dict)

    def decide(self) -> str:
        self.stats = summarise(self.values)
        return check_verdict(self.values)

    def to_dict(self) -> dict:
        self.decide()
        return {**asdict(self), "verdict": check_verdict(self.values)}


def summarise(values: list[float]) -> dict:
    n = len(values)
    mean = statistics.fmean(values) if n else math.nan
    sd = statistics.stdev(values) if n > 1 else math.nan
    se = sd / math.sqrt(n) if n > 1 else math.nan
    return {"n": n, "mean": mean, "sd": sd, "se": se, "t": mean / se if n > 1 and se > 0 else math.nan}


def check_verdict(values: list[float]) -> str:
    values = [float(v) for v in values]
    if len(values) < 2 or any(not math.isfinite(v) for v in values):
        return "mixed"
    s = summarise(values)
    if s["se"] == 0:
        return "supported" if s["mean"] > 0 else "not supported" if s["mean"] < 0 else "mixed"
    if s["t"] > THRESHOLD:
        return "supported"
    if s["t"] < -THRESHOLD:
        return "not supported"
    return "mixed"


def lab_verdict(checks: list[Check] | list[list[float]]) -> str:
    verdicts = [check_verdict(c.values if isinstance(c, Check) else c) for c in checks]
    if verdicts and all(v == "supported" for v in verdicts):
        return "supported"
    if verdicts and all(v == "not supported" for v in verdicts):
        return "not supported"
    return "mixed"
