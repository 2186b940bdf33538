"""One statistics layer for the whole project: is a difference larger than its noise, and is a claim supported?

The rule in words (`RULE` says it in one sentence, and every report and lab page quotes it):

* Two accuracies **differ** when the p-value of their test is below ALPHA = 0.05, after Holm's correction when
  several comparisons are made together. The test depends on what was kept:
  - one run each, per-example correctness on the same examples: McNemar's exact test (`mcnemar`);
  - several seeds, per-example correctness on the same examples: a t whose squared standard error adds the
    seed variance of each side's accuracies and the example variance of the seed-averaged per-example
    differences; the seed parts pooled by Welch-Satterthwaite, then combined with the example part by Cochran &
    Cox's weighted critical value (`paired_runs`; `_from_parts` says why not Welch-Satterthwaite throughout);
  - per-seed accuracies only: the same t with binomial example variance p(1-p)/n in place of the paired part
    (`unpaired_accuracies`);
  - two disjoint example sets (e.g. clean and contaminated test examples): Fisher's exact test
    (`two_proportions`).
* A **claim** measured as one signed value per seed (or per independent unit), positive where the claim predicts,
  is judged by Student's t over those values (`seed_test`), against its margin m >= 0, the smallest effect that
  matters:
  - superiority: supported when the 95% interval of the mean lies above 0 (an effect beyond noise) and the mean
    is at least m; not supported when the interval's high end is below m (with m = 0: the opposite direction
    beyond noise; with m > 0 also: reliably smaller than what matters); mixed otherwise;
  - equivalence (two one-sided tests, Schuirmann 1987, so the 90% interval): supported when the interval lies
    inside (-m, m), not supported when it lies outside, mixed otherwise (m > 0 required);
  - non-inferiority (one one-sided test, the 90% interval): supported when its low end is above -m, not
    supported when its high end is below -m, mixed otherwise.
  Fewer than two values, or a value that is not finite: mixed (no spread to judge by). All values equal (no
  spread: a measurement without noise, or one too coarse to show it): the interval is that point, and only a
  positive margin can decide (superiority: supported when the value exceeds m, not supported when it falls short
  of it; with m = 0, mixed), so a constant 1e-12 is never "supported". After `holm`, "beyond noise" is read
  from the Holm-adjusted p-value (the interval is not widened: it stays the comparison's own 95% interval).

Why "low end > 0 and mean >= m" for superiority rather than "low end > m": both keep the false-supported rate
under no effect at most 2.5% (one side of a 95% interval; simulated, 2-5 seeds and m of 0.5-1 sd: 0.7-2.3%
against 0-0.9%), and "low end > 0 and mean >= m" finds a real effect of 2m two to three times as often (3 seeds,
m = 1 sd: 47% against 18%; 5 seeds: 91% against 41%). The price: an effect right at the margin is called
supported 5-34% of the time (against 2.5%), so "supported" reads "an effect beyond noise whose estimate reaches
the margin", not "an effect proven to exceed the margin". tests/stats/test_calibration.py measures both.

References: McNemar (1947) Psychometrika 12:153; Fisher (1935) exact test; Student (1908); Welch (1947)
Biometrika 34:28 and Satterthwaite (1946) Biometrics 2:110 (degrees of freedom of a sum of variances); Cochran &
Cox (1950) Experimental Designs, sec. 4.4 (weighted critical value);
Wilson (1927) JASA 22:209 (score interval); Newcombe (1998a) Stat Med 17:873, method 10 (difference of
independent proportions) and Newcombe (1998b) Stat Med 17:2635, method 10 (paired proportions); Schuirmann (1987)
J Pharmacokinet Biopharm 15:657 (two one-sided tests); Holm (1979) Scand J Stat 6:65 (step-down correction).

Layer 0: numpy, scipy and the standard library only. Every function takes plain numbers or arrays and returns a
frozen `Comparison`, so researchers can call it on their own results.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np
from scipy import special as _sp
from scipy import stats as _st
from scipy.optimize import brentq

__all__ = ["ALPHA", "CLAIMS", "Comparison", "RULE", "equivalence", "holm", "holm_adjust", "mcnemar",
           "paired_runs", "seed_test", "two_proportions", "unpaired_accuracies"]

ALPHA = 0.05
CLAIMS = ("difference", "superiority", "equivalence", "noninferiority")
RULE = ("two accuracies differ when their test's p-value is below 0.05 after Holm's correction over the "
        "comparisons made together (McNemar's exact test for one run each on the same examples, Fisher's exact "
        "test for disjoint example sets, otherwise a t whose standard error adds seed and example variance, "
        "Welch-Satterthwaite across seeds and Cochran-Cox across the two); a claim measured over seeds is "
        "supported when the 95% Student's t interval of its mean lies above 0 and the mean reaches its margin, "
        "not supported when the interval lies below the margin, mixed otherwise (equivalence and "
        "non-inferiority: the 90% interval "
        "inside, or outside, ±margin; fewer than two values, or equal values and no positive margin: mixed)")

# Values whose range is within this share of their magnitude count as equal (float round-off, not spread).
_TIE = 1e-12


@dataclass(frozen=True)
class Comparison:
    """An estimate with its interval and the test that decides. `verdict` applies the rule for `claim`."""

    estimate: float  # a - b, or the mean of the values
    low: float  # 95% two-sided interval (90% for equivalence and non-inferiority: the TOST convention)
    high: float
    p_value: float  # of the test that decides (two-sided for "difference" and "superiority"); NaN: no test
    method: str  # "McNemar exact", "Student's t, 2 df", "t, 14.3 df (seeds + examples)", "Fisher exact"
    df: float | None  # degrees of freedom where a t is used (inf: normal); None otherwise
    claim: str = "difference"  # "difference" | "superiority" | "equivalence" | "noninferiority"
    margin: float = 0.0
    n_seeds: tuple[int, int] | int | None = None
    n_examples: int | None = None
    p_adjusted: float | None = None  # set by holm(); decisions use it when set
    family: int = 1  # how many comparisons were corrected together

    @property
    def level(self) -> float:
        """The interval's confidence level."""
        return 0.90 if self.claim in ("equivalence", "noninferiority") else 0.95

    @property
    def _p(self) -> float:
        return self.p_value if self.p_adjusted is None else self.p_adjusted

    @property
    def significant(self) -> bool:
        """The deciding test rejects its null at ALPHA (Holm-adjusted p when set). Its null: no difference
        ("difference", "superiority"); a difference of at least the margin ("equivalence"); the first worse by
        at least the margin ("noninferiority")."""
        return bool(self._p < ALPHA)  # NaN (no test) compares False

    @property
    def _point(self) -> bool:
        return self.low == self.high and math.isfinite(self.low)

    @property
    def verdict(self) -> str:
        """'differs' / 'within noise' for a difference; 'supported' / 'not supported' / 'mixed' for a claim."""
        if self.claim == "difference":
            return "differs" if self.significant else "within noise"
        est, m = self.estimate, self.margin
        if not math.isfinite(est):
            return "mixed"
        if self._point:  # no spread: only a positive margin can decide
            if self.claim == "equivalence":
                return "supported" if abs(est) < m else "not supported" if abs(est) > m else "mixed"
            if m <= 0:
                return "mixed"
            line = m if self.claim == "superiority" else -m
            return "supported" if est > line else "not supported" if est < line else "mixed"
        if self.claim == "superiority":
            if self.significant and est > 0 and est >= m:
                return "supported"
            if (self.significant and est < 0) or self.high < m:
                return "not supported"
            return "mixed"
        if self.claim == "equivalence":
            if self.significant:
                return "supported"
            return "not supported" if self.low > m or self.high < -m else "mixed"
        if self.significant:  # noninferiority
            return "supported"
        return "not supported" if self.high < -m else "mixed"

    @property
    def band(self) -> str:
        """'+0.020 [-0.003, +0.043]'."""
        return f"{_num(self.estimate)} [{_num(self.low)}, {_num(self.high)}]"

    @property
    def text(self) -> str:
        """'+0.020 [95% CI -0.003, +0.043] (McNemar exact): within noise'; in a Holm family the interval is marked
        unadjusted and the adjusted p that decides is given: '+0.030 [95% CI, unadjusted +0.001, +0.059] (McNemar
        exact; Holm over 3, adjusted p 0.11): within noise'."""
        notes = [self.method]
        if self.claim != "difference":
            notes.append(f"{self.claim}, margin {self.margin:g}")
        unadjusted = ""
        if self.family > 1:  # the interval is the comparison's own; the verdict reads the Holm-adjusted p
            notes.append(f"Holm over {self.family}, adjusted p {self.p_adjusted:.3g}")
            unadjusted = ", unadjusted"
        ci = f"[{self.level * 100:.0f}% CI{unadjusted} {_num(self.low)}, {_num(self.high)}]"
        return f"{_num(self.estimate)} {ci} ({'; '.join(notes)}): {self.verdict}"

    def to_dict(self) -> dict:
        """JSON-ready: a number that is not finite (no test: NaN p; unknown noise: an infinite interval) is None,
        so results files stay strict JSON."""
        fields = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in asdict(self).items()}
        return {**fields, "level": self.level, "verdict": self.verdict, "significant": self.significant,
                "band": self.band, "text": self.text}


def _num(x: float) -> str:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    return f"{x:+.3f}" if x == 0 or abs(x) >= 0.01 else f"{x:+.3g}"


def _check_claim(claim: str, margin: float) -> float:
    if claim not in CLAIMS:
        raise ValueError(f"claim must be one of {CLAIMS}, got {claim!r}")
    margin = float(margin)
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    if claim == "equivalence" and margin <= 0:
        raise ValueError("an equivalence claim needs a margin > 0 (the largest difference that does not matter)")
    return margin


def _t_crit(level: float, df: float) -> float:
    """The two-sided critical value of a t with df degrees of freedom (normal when df is inf)."""
    return _t_isf((1 - level) / 2, df)


def _t_isf(tail: float, df: float) -> float:
    """x with P(T > x) = tail for a t with df degrees of freedom (normal when df is inf). scipy.special's ufuncs
    (as scipy.stats.t uses), called directly: the calibration tests call this ~10^5 times."""
    return float(-_sp.ndtri(tail) if math.isinf(df) else -_sp.stdtrit(df, tail))


def _t_sf(x: float, df: float) -> float:
    """P(T > x)."""
    return float(_sp.ndtr(-x) if math.isinf(df) else _sp.stdtr(df, -x))


def _no_test(estimate: float, why: str, **kw) -> Comparison:
    return Comparison(estimate, -math.inf, math.inf, math.nan, f"no test: {why}", None, **kw)


# --- claims over per-seed values ---------------------------------------------------------------------------------

def seed_test(values: Sequence[float], margin: float = 0.0, claim: str = "superiority") -> Comparison:
    """One-sample Student's t over per-seed (or per-unit) values, df = n - 1, signed so that positive is what the
    claim predicts. The interval is 95% two-sided for "superiority" and "difference", 90% for "equivalence" and
    "noninferiority" (two one-sided tests at 5% each). p_value: two-sided, H0 mean = 0 ("superiority",
    "difference"); max of the two one-sided p-values, H0 |mean| >= m ("equivalence"); one-sided, H0 mean <= -m
    ("noninferiority"). The verdict's rule: see the module docstring."""
    margin = _check_claim(claim, margin)
    x = np.asarray(values, dtype=float).ravel()
    n = x.size
    kw = dict(claim=claim, margin=margin, n_seeds=n)
    if n == 0:
        return _no_test(math.nan, "no values", **kw)
    if not np.all(np.isfinite(x)):
        return _no_test(math.nan, "a value is not finite", **kw)
    mean = float(x.mean())
    if n < 2:
        return _no_test(mean, "one value, no spread to judge by", **kw)
    if np.ptp(x) <= _TIE * float(np.abs(x).max()):
        return Comparison(mean, mean, mean, math.nan, f"no spread: all {n} values equal", None, **kw)
    df = n - 1
    level = 0.90 if claim in ("equivalence", "noninferiority") else 0.95
    se = float(x.std(ddof=1)) / math.sqrt(n)
    half = _t_crit(level, df) * se
    if claim == "equivalence":
        p = max(_t_sf((mean + margin) / se, df), _t_sf((margin - mean) / se, df))
    elif claim == "noninferiority":
        p = _t_sf((mean + margin) / se, df)
    else:
        p = 2 * _t_sf(abs(mean) / se, df)
    method = f"Student's t, {df} df" if claim not in ("equivalence",) else f"TOST, Student's t, {df} df"
    return Comparison(mean, mean - half, mean + half, min(1.0, p), method, float(df), **kw)


def equivalence(values: Sequence[float], margin: float) -> Comparison:
    """Two one-sided tests over per-seed values: supported when the 90% interval lies inside (-margin, margin)."""
    return seed_test(values, margin, "equivalence")


# --- two accuracies ----------------------------------------------------------------------------------------------

def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    """Wilson (1927) score interval for k successes in n."""
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _binary(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.size == 0:
        raise ValueError(f"{name}: no examples")
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name}: per-example correctness must be 0/1 (or bool)")
    return arr.astype(bool)


def mcnemar(a_correct, b_correct) -> Comparison:
    """Two runs scored on the same examples (0/1 per example, same order). p: McNemar's exact test, the two-sided
    binomial test of the discordant pairs against 1/2 (scipy.stats.binomtest); 1 when there are none.
    Interval: Newcombe's (1998b) method 10, Wilson score intervals of the two accuracies combined with the
    correlation of the paired table (phi, its numerator ad - bc moved n/2 towards 0 when positive, and phi = 0
    when a margin of the table is empty); it reproduces the paper's worked examples and stays inside
    [-1, 1] and behaves at 0 or all discordant pairs, where the Wald interval does not.
    It compares these two runs: with one run each the seed-to-seed variance is not seen, so a difference between
    two training runs of one strategy counts as real here. Claims about strategies need several seeds."""
    a, b = _binary(a_correct, "a_correct").ravel(), _binary(b_correct, "b_correct").ravel()
    if a.shape != b.shape:
        raise ValueError(f"a_correct and b_correct must cover the same examples, got {a.size} and {b.size}")
    n = a.size
    both, a_only = int(np.sum(a & b)), int(np.sum(a & ~b))
    b_only, neither = int(np.sum(~a & b)), int(np.sum(~a & ~b))
    discordant = a_only + b_only
    p = float(_st.binomtest(a_only, discordant, 0.5).pvalue) if discordant else 1.0
    low, high = _newcombe_paired(both, a_only, b_only, neither, _t_crit(0.95, math.inf))
    return Comparison((a_only - b_only) / n, low, high, min(1.0, p), "McNemar exact", None,
                      n_seeds=(1, 1), n_examples=n)


def _newcombe_paired(both: int, a_only: int, b_only: int, neither: int, z: float) -> tuple[float, float]:
    """Newcombe (1998b) method 10 for p_a - p_b from a paired 2x2 table."""
    n = both + a_only + b_only + neither
    pa, pb = (both + a_only) / n, (both + b_only) / n
    la, ua = _wilson(both + a_only, n, z)
    lb, ub = _wilson(both + b_only, n, z)
    margins = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    cross = both * neither - a_only * b_only  # phi's numerator; a positive one is moved n/2 towards 0 (Newcombe)
    cross = cross if cross < 0 else max(0.0, cross - n / 2)
    phi = cross / math.sqrt(margins) if margins else 0.0
    d = pa - pb
    lower = d - math.sqrt(max(0.0, (pa - la) ** 2 - 2 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2))
    upper = d + math.sqrt(max(0.0, (ua - pa) ** 2 - 2 * phi * (ua - pa) * (pb - lb) + (pb - lb) ** 2))
    return max(-1.0, lower), min(1.0, upper)


def two_proportions(k_a: int, n_a: int, k_b: int, n_b: int) -> Comparison:
    """k_a of n_a against k_b of n_b on disjoint example sets (e.g. a run's accuracy on its clean and on its
    contaminated test examples). p: Fisher's exact test, two-sided (scipy.stats.fisher_exact); interval: Newcombe's
    (1998a) hybrid score interval (method 10: Wilson intervals of each proportion, squared and added), which
    keeps its coverage near 95% at small n and at 0 or 1, where the Wald interval does not."""
    for name, v in (("k_a", k_a), ("n_a", n_a), ("k_b", k_b), ("n_b", n_b)):
        if int(v) != v:
            raise ValueError(f"{name} must be a whole number, got {v!r}")
    k_a, n_a, k_b, n_b = int(k_a), int(n_a), int(k_b), int(n_b)
    if n_a < 1 or n_b < 1 or not 0 <= k_a <= n_a or not 0 <= k_b <= n_b:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got {k_a}/{n_a} and {k_b}/{n_b}")
    p = float(_st.fisher_exact([[k_a, n_a - k_a], [k_b, n_b - k_b]]).pvalue)
    pa, pb = k_a / n_a, k_b / n_b
    z = _t_crit(0.95, math.inf)
    la, ua = _wilson(k_a, n_a, z)
    lb, ub = _wilson(k_b, n_b, z)
    d = pa - pb
    low, high = d - math.hypot(pa - la, ub - pb), d + math.hypot(ua - pa, pb - lb)
    return Comparison(d, low, high, min(1.0, p), "Fisher exact", None, n_seeds=None, n_examples=n_a + n_b)


def _welch(parts: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """A sum of independent variance estimates v_i (df_i each) as one part: (sum v_i, Welch-Satterthwaite df),
    df = (sum v_i)^2 / sum(v_i^2 / df_i) (Satterthwaite 1946; Welch 1947). Parts with v_i = 0 add nothing."""
    total = sum(v for v, _ in parts)
    denom = sum(v * v / df for v, df in parts if v > 0 and not math.isinf(df))
    return total, (math.inf if denom == 0 else total * total / denom)


def _crit(parts: Sequence[tuple[float, float]], alpha: float) -> float:
    """Cochran & Cox's (1950) critical value for an estimate whose variance is a sum of independent parts v_i with
    df_i each: the parts' own two-sided t quantiles weighted by their shares, sum v_i t_i / sum v_i."""
    total = sum(v for v, _ in parts)
    return sum(v * _t_isf(alpha / 2, df) for v, df in parts if v > 0) / total


def _equivalent_df(crit: float) -> float:
    """The df whose 97.5% t quantile is `crit` (inf when crit is the normal's)."""
    z = _t_crit(0.95, math.inf)
    if crit <= z * (1 + 1e-9):
        return math.inf
    return float(brentq(lambda df: _t_crit(0.95, df) - crit, 0.9, 1e9))


def _crit_p(parts: Sequence[tuple[float, float]], t_abs: float) -> float:
    """The two-sided p-value of |t| under the Cochran-Cox critical value: the alpha at which it equals |t|. It lies
    between the parts' own p-values (the critical value is a weighted mean of their quantiles)."""
    ps = [2 * _t_sf(t_abs, df) for v, df in parts if v > 0]
    lo, hi = min(ps), max(ps)
    if hi <= 0 or hi - lo <= 1e-12 * hi:
        return hi
    if lo <= 0:
        lo = 1e-300
    return math.exp(brentq(lambda x: _crit(parts, math.exp(x)) - t_abs, math.log(lo), math.log(hi), xtol=1e-9))


def _seed_parts(acc_a: np.ndarray, acc_b: np.ndarray) -> tuple[list[tuple[float, float]], str]:
    """The seed-variance parts of var(mean_a - mean_b): s_a^2/k_a (df k_a-1) and s_b^2/k_b (df k_b-1). A side with
    one seed has no variance of its own: the other side's s^2 stands for both, one part s^2 (1/k_a + 1/k_b) with
    the other side's df. One seed each: no seed part (the caller says so)."""
    ka, kb = acc_a.size, acc_b.size
    if ka > 1 and kb > 1:
        return [(float(acc_a.var(ddof=1)) / ka, ka - 1.0), (float(acc_b.var(ddof=1)) / kb, kb - 1.0)], ""
    if ka == 1 and kb == 1:
        return [], ""
    other = acc_b if ka == 1 else acc_a
    note = "; one side's seed variance taken from the other's"
    return [(float(other.var(ddof=1)) * (1 / ka + 1 / kb), other.size - 1.0)], note


def _from_parts(estimate: float, seed: list[tuple[float, float]], noise: list[tuple[float, float]], method: str,
                **kw) -> Comparison:
    """t = estimate / sqrt(sum of every part). The seed parts are summed into one with Welch-Satterthwaite df
    (Welch's two-sample test across seeds), the example parts likewise; the two are combined by Cochran & Cox's
    weighted critical value. Why not Welch-Satterthwaite over all parts at once: with 2-3 seeds a seed part has
    1-2 df, and mixed with an example part of hundreds of df its df estimate swings high whenever the seed
    variance happens to come out small, so it rejects a true null up to 12% of the time at ALPHA = 0.05;
    Cochran-Cox over every part alone stays valid but cannot pool two 1-df seed parts and loses half the power
    (tests/stats/test_calibration.py measures all three). df: the t whose 97.5% quantile is the critical value."""
    groups = [_welch(g) for g in (seed, noise) if sum(v for v, _ in g) > 0]
    se = math.sqrt(sum(v for v, _ in groups))
    crit = _crit(groups, ALPHA)
    df = _equivalent_df(crit)
    p = _crit_p(groups, abs(estimate) / se)
    label = "z" if math.isinf(df) else f"t, {df:.1f} df"
    return Comparison(estimate, estimate - crit * se, estimate + crit * se, min(1.0, p), f"{label} ({method})", df,
                      **kw)


def paired_runs(a: Sequence, b: Sequence) -> Comparison:
    """Strategy a against strategy b from per-example correctness: `a` and `b` are lists of 0/1 arrays, one per
    seed, all over the SAME examples in the same order. One seed each: `mcnemar`. Otherwise a variance-components
    t: estimate = mean over a's seeds of its accuracy minus the same for b;

        se^2 = s_a^2/k_a + s_b^2/k_b + var_e(dbar_e)/N

    (s^2: the variance over seeds of the per-run accuracies; dbar_e: example e's seed-averaged correctness under
    a minus under b; var_e over the N examples, paired, so the examples' shared difficulty cancels); the parts'
    df (k_a-1, k_b-1, N-1) combine as `_from_parts` says. The within-example seed noise is in both the seed part
    and the example part, so it is counted a little twice: the test errs conservative. A side with a single seed
    borrows the other side's seed variance (see `_seed_parts`): right when the two strategies vary alike from
    seed to seed, badly liberal when the single-seed side varies much more (run 2+ seeds on both sides). With no
    spread at all (every run the same accuracy, every example the same difference) a sign test over the examples
    decides."""
    A, B = _runs(a, "a"), _runs(b, "b")
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"a and b must cover the same examples, got {A.shape[1]} and {B.shape[1]}")
    ka, kb, n = A.shape[0], B.shape[0], A.shape[1]
    if ka == 1 and kb == 1:
        return mcnemar(A[0], B[0])
    acc_a, acc_b = A.mean(axis=1), B.mean(axis=1)  # (k,) per-run accuracies
    estimate = float(acc_a.mean() - acc_b.mean())
    d = A.mean(axis=0) - B.mean(axis=0)  # (N,) seed-averaged per-example differences
    seed, note = _seed_parts(acc_a, acc_b)
    examples = [(float(d.var(ddof=1)) / n, n - 1.0)] if n > 1 else []
    kw = dict(n_seeds=(ka, kb), n_examples=n)
    if sum(v for v, _ in seed + examples) <= 0:
        pos, neg = int(np.sum(d > 0)), int(np.sum(d < 0))
        p = float(_st.binomtest(pos, pos + neg, 0.5).pvalue) if pos + neg else 1.0
        return Comparison(estimate, estimate, estimate, p, "sign test over examples (no spread)", None, **kw)
    return _from_parts(estimate, seed, examples, "seeds + examples" + note, **kw)


def _runs(x, name: str) -> np.ndarray:
    arr = np.asarray([np.asarray(r).ravel() for r in x]) if not isinstance(x, np.ndarray) else x
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise ValueError(f"{name}: a list of per-example 0/1 arrays, one per seed, of one length")
    return _binary(arr, name).astype(float)


def unpaired_accuracies(a_values: Sequence[float], n_a: int | None, b_values: Sequence[float],
                        n_b: int | None) -> Comparison:
    """Strategy a against b from per-seed accuracies only (old runs, no per-example arrays): a_values scored on
    n_a examples each, b_values on n_b.

        se^2 = s_a^2/k_a + s_b^2/k_b + p_a(1-p_a)/n_a + p_b(1-p_b)/n_b

    with the parts' df (seed parts k-1, binomial parts n-1) combined as `_from_parts` says; one seed each: z
    (df = inf) on the binomial parts alone. The binomial part is not divided by k: every seed scores the same
    examples, so more seeds do not shrink it. a and b are treated as independent; scored on the same examples
    they are positively correlated, so this errs conservative (`paired_runs` is sharper). A side with one seed
    borrows the other's seed variance. n_a or n_b None: the example noise is unknown, the interval infinite, the
    verdict "within noise"."""
    va, vb = np.asarray(a_values, dtype=float).ravel(), np.asarray(b_values, dtype=float).ravel()
    if va.size == 0 or vb.size == 0:
        raise ValueError("unpaired_accuracies needs at least one accuracy on each side")
    if not (np.all((va >= 0) & (va <= 1)) and np.all((vb >= 0) & (vb <= 1))):
        raise ValueError("accuracies must lie in [0, 1]")
    pa, pb = float(va.mean()), float(vb.mean())
    kw = dict(n_seeds=(va.size, vb.size), n_examples=n_a if n_a == n_b else None)
    if n_a is None or n_b is None:
        return _no_test(pa - pb, "number of examples unknown", **kw)
    if n_a < 1 or n_b < 1:
        raise ValueError(f"n_a and n_b must be >= 1, got {n_a} and {n_b}")
    seed, note = _seed_parts(va, vb)
    binomial = [(pa * (1 - pa) / n_a, n_a - 1.0 if n_a > 1 else math.inf),
                (pb * (1 - pb) / n_b, n_b - 1.0 if n_b > 1 else math.inf)]
    if va.size == 1 and vb.size == 1:
        binomial = [(v, math.inf) for v, _ in binomial]  # one seed each: the two-proportion z
    if sum(v for v, _ in seed + binomial) <= 0:  # every accuracy 0 or 1 and no seed spread: counts decide
        return replace(two_proportions(round(pa * n_a), n_a, round(pb * n_b), n_b), **kw)
    return _from_parts(pa - pb, seed, binomial, ("binomial, one seed each" if va.size == vb.size == 1
                                                  else "seeds + binomial") + note, **kw)


# --- several comparisons at once -------------------------------------------------------------------------------

def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's (1979) step-down adjusted p-values: sort ascending, p_(i) * (m - i + 1), running maximum, capped
    at 1; reject where the adjusted value is < ALPHA. Controls the family-wise error rate under any dependence.
    Written here because scipy has no Holm correction (statsmodels does; the project does not depend on it).
    NaN (no test) counts as 1 in the ordering and stays NaN."""
    p = np.asarray(p_values, dtype=float).ravel()
    m = p.size
    if m == 0:
        return []
    filled = np.where(np.isnan(p), 1.0, p)
    order = np.argsort(filled, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * filled[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    adjusted[np.isnan(p)] = np.nan
    return [float(v) for v in adjusted]


def holm(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """Copies of `comparisons` with `p_adjusted` (Holm over all of them) and `family` set; their verdicts then
    use the adjusted p."""
    adjusted = holm_adjust([c.p_value for c in comparisons])
    return [replace(c, p_adjusted=p, family=len(comparisons)) for c, p in zip(comparisons, adjusted)]
