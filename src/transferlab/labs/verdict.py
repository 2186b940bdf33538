"""How a lab's verdict comes from its numbers, never written in advance.

A lab measures one or more checks. A check is a list of values, one per seed (or per independent unit), signed
so that a positive value is what the claim predicts (e.g. "validation accuracy of L2-SP minus that of plain L2"),
with a margin (the smallest effect that matters, in the check's unit) and a kind of claim: "superiority" (the
value is positive, by at least the margin), "noninferiority" (it is not below -margin: "at least as well",
"within N points") or "equivalence" (it lies within ±margin). Each check is decided by the project's one rule,
`transferlab.stats.seed_test` (Student's t over the values; `stats.RULE` says it in one sentence):

    superiority     supported      95% interval above 0 and mean >= margin
                    not supported  95% interval's high end below the margin
    noninferiority  supported      90% interval's low end above -margin; not supported: its high end below it
    equivalence     supported      90% interval inside (-margin, margin); not supported: entirely outside
    otherwise       mixed

Fewer than two values, or a value that is not finite: mixed. All values equal: only a positive margin decides.
The lab is supported when every check is, not supported when every check is, and mixed otherwise. Requiring every
check is an intersection-union test (Berger 1982, Technometrics 24:295): the lab is falsely supported only if
every check is, so each at level 0.05 keeps the lab at 0.05 with no multiplicity correction.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field, replace

from transferlab.stats import RULE as STATS_RULE
from transferlab.stats import Comparison, paired_runs, seed_test

VERDICTS = ("supported", "not supported", "mixed")
KINDS = ("superiority", "noninferiority", "equivalence")
RULE = (f"each check, from its values (one per seed or unit, positive where the claim predicts) and its margin: "
        f"{STATS_RULE}; the lab: supported when every check is (an intersection-union test, so no multiplicity "
        f"correction is needed), not supported when every check is, mixed otherwise")


@dataclass
class Check:
    """One measured sub-claim: `values` signed so that positive supports `claim`; `margin` the smallest effect
    that matters (in `unit`); `kind` "superiority", "noninferiority" or "equivalence"."""

    name: str
    claim: str  # what a positive value means, in words
    values: list[float]
    unit: str = ""
    per: str = "seed"  # what one value is: a seed, a depth group, a severity ...
    margin: float = 0.0
    kind: str = "superiority"
    stats: dict = field(default_factory=dict)
    # (a, b): per-example correctness of the two sides on the same examples, one 0/1 array per seed, when the
    # check is "accuracy of a minus accuracy of b": then it is decided as the comparison report decides the same
    # runs (stats.paired_runs: seed and example noise), not over the per-seed differences alone
    paired: tuple[list, list] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"check {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if not (math.isfinite(self.margin) and self.margin >= 0) or (self.kind == "equivalence" and self.margin <= 0):
            raise ValueError(f"check {self.name!r}: margin must be >= 0 (> 0 for equivalence), got {self.margin!r}")
        if self.paired is not None and self.kind != "superiority":
            raise ValueError(f"check {self.name!r}: a paired check is a superiority claim (its interval is 95%)")

    def comparison(self) -> Comparison:
        if self.paired is not None:
            return replace(paired_runs(*self.paired), claim=self.kind, margin=self.margin)
        return seed_test(_floats(self.values), self.margin, self.kind)

    def decide(self) -> str:
        self.stats = summarise(self.values)
        return self.comparison().verdict

    def to_dict(self) -> dict:
        verdict = self.decide()
        out = {k: v for k, v in asdict(self).items() if k != "paired"}
        return {**out, "paired": self.paired is not None, "verdict": verdict,
                "comparison": self.comparison().to_dict()}


def _floats(values) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]  # None: a NaN read back from result.json


def summarise(values: list[float]) -> dict:
    """n, mean, sd, se and mean / se of the values (the page's columns; the verdict comes from `check_verdict`)."""
    values = _floats(values)
    n = len(values)
    mean = statistics.fmean(values) if n else math.nan
    sd = statistics.stdev(values) if n > 1 else math.nan
    se = sd / math.sqrt(n) if n > 1 else math.nan
    return {"n": n, "mean": mean, "sd": sd, "se": se, "t": mean / se if n > 1 and se > 0 else math.nan}


def check_verdict(values: list[float], margin: float = 0.0, claim: str = "superiority") -> str:
    """One check's verdict from its per-seed values: `stats.seed_test(values, margin, claim).verdict`."""
    if claim not in KINDS:
        raise ValueError(f"claim must be one of {KINDS}, got {claim!r}")
    return seed_test(_floats(values), margin, claim).verdict


def lab_verdict(checks: list[Check] | list[dict] | list[list[float]]) -> str:
    """The lab's verdict from its checks: `Check`s, their dicts (a result.json's "checks"), or bare value lists
    (superiority with margin 0)."""
    verdicts = []
    for c in checks:
        if isinstance(c, Check):
            verdicts.append(c.comparison().verdict)
        elif isinstance(c, dict) and c.get("paired"):  # decided on per-example arrays result.json does not hold
            verdicts.append(c["comparison"]["verdict"])
        elif isinstance(c, dict):
            verdicts.append(check_verdict(c["values"], c.get("margin", 0.0), c.get("kind", "superiority")))
        else:
            verdicts.append(check_verdict(c))
    if verdicts and all(v == "supported" for v in verdicts):
        return "supported"
    if verdicts and all(v == "not supported" for v in verdicts):
        return "not supported"
    return "mixed"
