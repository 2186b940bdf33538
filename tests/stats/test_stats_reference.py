"""transferlab.stats against independent computations: hand-enumerated sums, scipy's own tests, published worked
examples (Newcombe 1998a/b), and hand-worked Holm and variance-component examples; then the verdict rules on
constructed numbers, including the degenerate ones."""
import json
import math
from itertools import product

import numpy as np
import pytest
from scipy import stats as st

from transferlab import stats
from transferlab.stats import (ALPHA, Comparison, equivalence, holm, holm_adjust, mcnemar, paired_runs, seed_test,
                               two_proportions, unpaired_accuracies)


def table_arrays(both, a_only, b_only, neither):
    """Per-example 0/1 arrays (a, b) of a paired 2x2 table."""
    a = [1] * both + [1] * a_only + [0] * b_only + [0] * neither
    b = [1] * both + [0] * a_only + [1] * b_only + [0] * neither
    return np.array(a), np.array(b)


# --- McNemar -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("a_only,b_only", [(9, 3), (3, 9), (5, 5), (0, 7), (12, 1), (0, 1)])
def test_mcnemar_p_is_the_hand_enumerated_binomial_sum(a_only, b_only):
    a, b = table_arrays(40, a_only, b_only, 17)
    n = a_only + b_only
    # two-sided: every outcome no more likely than the one seen, under Binomial(n, 1/2)
    seen = math.comb(n, a_only)
    p = sum(math.comb(n, k) for k in range(n + 1) if math.comb(n, k) <= seen) / 2 ** n
    c = mcnemar(a, b)
    assert c.p_value == pytest.approx(min(1.0, p), rel=1e-12)
    assert c.estimate == pytest.approx((a_only - b_only) / (57 + n))
    assert c.method == "McNemar exact" and c.df is None and c.n_seeds == (1, 1) and c.n_examples == 57 + n


def test_mcnemar_without_discordant_pairs():
    a, b = table_arrays(30, 0, 0, 10)
    c = mcnemar(a, b)
    assert c.p_value == 1.0 and c.estimate == 0 and c.verdict == "within noise" and c.low < 0 < c.high


@pytest.mark.parametrize("table,low,high", [
    # Newcombe (1998b), Stat Med 17:2635, the worked examples of method 10 (to 4 decimals)
    ((36, 12, 2, 0), 0.0569, 0.3404),
    ((18, 12, 2, 18), 0.0562, 0.3290),
    ((53, 0, 0, 1), -0.0729, 0.0729),
    ((0, 30, 0, 0), 0.8395, 1.0),
])
def test_mcnemar_interval_is_newcombes_method_10(table, low, high):
    c = mcnemar(*table_arrays(*table))
    assert (round(c.low, 4), round(c.high, 4)) == (low, high)


def test_mcnemar_interval_agrees_with_wald_on_a_large_table():
    both, a_only, b_only, neither = 6000, 700, 500, 2800
    n = both + a_only + b_only + neither
    c = mcnemar(*table_arrays(both, a_only, b_only, neither))
    d = (a_only - b_only) / n
    se = math.sqrt((a_only + b_only) / n - d * d) / math.sqrt(n)  # the paired Wald standard error
    assert c.low == pytest.approx(d - 1.959964 * se, abs=2e-4)
    assert c.high == pytest.approx(d + 1.959964 * se, abs=2e-4)


def test_mcnemar_refuses_bad_input():
    with pytest.raises(ValueError, match="0/1"):
        mcnemar([0, 1, 2], [0, 1, 1])
    with pytest.raises(ValueError, match="same examples"):
        mcnemar([0, 1, 1], [0, 1])


# --- Fisher and Newcombe's hybrid score interval -----------------------------------------------------------------

def test_fisher_p_on_the_tea_tasting_table():
    # Fisher's lady tasting tea: 3 of 4 cups right in each row; two-sided p = 34/70
    c = two_proportions(3, 4, 1, 4)
    assert c.p_value == pytest.approx(34 / 70, rel=1e-12)
    assert c.method == "Fisher exact" and c.verdict == "within noise"


def test_fisher_p_against_a_hand_enumerated_hypergeometric_sum():
    k_a, n_a, k_b, n_b = 12, 20, 4, 18
    total, draws = k_a + k_b, n_a
    pmf = {x: math.comb(total, x) * math.comb(n_a + n_b - total, draws - x) / math.comb(n_a + n_b, draws)
           for x in range(max(0, draws - (n_a + n_b - total)), min(total, draws) + 1)}
    p = sum(v for v in pmf.values() if v <= pmf[k_a] * (1 + 1e-7))
    assert two_proportions(k_a, n_a, k_b, n_b).p_value == pytest.approx(p, rel=1e-9)


@pytest.mark.parametrize("counts,low,high", [
    # Newcombe (1998a), Stat Med 17:873, method 10 on its worked examples (to 4 decimals)
    ((56, 70, 48, 80), 0.0524, 0.3339),
    ((9, 10, 3, 10), 0.1705, 0.8090),
    ((5, 56, 0, 29), -0.0381, 0.1926),
])
def test_two_proportions_interval_is_newcombes_hybrid_score(counts, low, high):
    c = two_proportions(*counts)
    assert (round(c.low, 4), round(c.high, 4)) == (low, high)
    assert c.estimate == pytest.approx(counts[0] / counts[1] - counts[2] / counts[3])


def test_two_proportions_refuses_impossible_counts():
    for bad in [(5, 4, 1, 4), (1, 0, 1, 4), (-1, 4, 1, 4), (1.5, 4, 1, 4)]:
        with pytest.raises(ValueError):
            two_proportions(*bad)


# --- seed_test against scipy's one-sample t ----------------------------------------------------------------------

@pytest.mark.parametrize("values", [[0.019, 0.020, 0.021], [0.1, -0.1, 0.02], [0.3, 0.5], [1.0, 2.0, 4.0, 8.0, 3.0]])
def test_seed_test_interval_and_p_are_scipys_one_sample_t(values):
    ref = st.ttest_1samp(values, 0.0)
    c = seed_test(values)
    ci = ref.confidence_interval(0.95)
    assert (c.low, c.high) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))
    assert c.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert c.df == len(values) - 1 and c.method == f"Student's t, {len(values) - 1} df"
    ci90 = ref.confidence_interval(0.90)
    for claim in ("equivalence", "noninferiority"):
        c90 = seed_test(values, 0.05, claim)
        assert (c90.low, c90.high) == (pytest.approx(ci90.low, rel=1e-9), pytest.approx(ci90.high, rel=1e-9))


def test_tost_and_noninferiority_p_are_scipys_one_sided_tests():
    values, m = [0.004, -0.006, 0.001, 0.009], 0.02
    lower = st.ttest_1samp(values, -m, alternative="greater").pvalue  # H0: mean <= -m
    upper = st.ttest_1samp(values, m, alternative="less").pvalue  # H0: mean >= m
    assert equivalence(values, m).p_value == pytest.approx(max(lower, upper), rel=1e-9)
    assert seed_test(values, m, "noninferiority").p_value == pytest.approx(lower, rel=1e-9)


# --- the variance-component t ------------------------------------------------------------------------------------

def _cochran_cox(parts, alpha=0.05):
    """Hand version: the parts' own t quantiles weighted by their variances."""
    return sum(v * st.t.isf(alpha / 2, df) for v, df in parts) / sum(v for v, _ in parts)


def _welch_df(parts):
    return sum(v for v, _ in parts) ** 2 / sum(v * v / df for v, df in parts)


def test_paired_runs_standard_error_and_critical_value_by_hand():
    rng = np.random.default_rng(11)
    a = [(rng.random(40) < 0.7).astype(int) for _ in range(3)]
    b = [(rng.random(40) < 0.6).astype(int) for _ in range(2)]
    acc_a = [sum(r) / 40 for r in a]
    acc_b = [sum(r) / 40 for r in b]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    var = lambda xs: sum((x - mean(xs)) ** 2 for x in xs) / (len(xs) - 1)  # noqa: E731
    d = [mean([r[e] for r in a]) - mean([r[e] for r in b]) for e in range(40)]
    seed = [(var(acc_a) / 3, 2), (var(acc_b) / 2, 1)]
    seed_part = (seed[0][0] + seed[1][0], _welch_df(seed))
    example_part = (var(d) / 40, 39)
    se = math.sqrt(seed_part[0] + example_part[0])
    crit = _cochran_cox([seed_part, example_part])
    c = paired_runs(a, b)
    assert c.estimate == pytest.approx(mean(acc_a) - mean(acc_b))
    assert c.high - c.estimate == pytest.approx(crit * se, rel=1e-9)
    assert st.t.isf(0.025, c.df) == pytest.approx(crit, rel=1e-6)  # df: the t with that critical value
    assert c.n_seeds == (3, 2) and c.n_examples == 40 and "seeds + examples" in c.method
    # the p-value is the alpha at which the critical value equals |t|, so p < 0.05 iff the interval excludes 0
    assert _cochran_cox([seed_part, example_part], c.p_value) == pytest.approx(abs(c.estimate) / se, rel=1e-6)


def test_welch_satterthwaite_df_of_the_seed_part_is_welchs_two_sample_df():
    a, b = [0.81, 0.84, 0.80, 0.86], [0.70, 0.78, 0.75]
    ref = st.ttest_ind(a, b, equal_var=False)
    total, df = stats._welch([(np.var(a, ddof=1) / 4, 3), (np.var(b, ddof=1) / 3, 2)])
    assert df == pytest.approx(ref.df, rel=1e-12)
    assert (np.mean(a) - np.mean(b)) / math.sqrt(total) == pytest.approx(ref.statistic, rel=1e-12)


def test_paired_runs_with_one_seed_each_is_mcnemar():
    a, b = table_arrays(30, 9, 3, 8)
    assert paired_runs([a], [b]) == mcnemar(a, b)


def test_paired_runs_with_one_seed_on_one_side_borrows_the_other_sides_seed_variance():
    rng = np.random.default_rng(3)
    a = [(rng.random(200) < 0.7).astype(int)]
    b = [(rng.random(200) < 0.7).astype(int) for _ in range(3)]
    acc_b = np.array([r.mean() for r in b])
    d = a[0] - np.mean(b, axis=0)
    seed_part = (acc_b.var(ddof=1) * (1 + 1 / 3), 2)
    example_part = (d.var(ddof=1) / 200, 199)
    c = paired_runs(a, b)
    se = math.sqrt(seed_part[0] + example_part[0])
    assert c.high - c.estimate == pytest.approx(_cochran_cox([seed_part, example_part]) * se, rel=1e-9)
    assert "borrow" in c.method or "taken from the other" in c.method


def test_paired_runs_without_any_spread_falls_back_to_a_sign_test():
    a = [np.ones(8, int)] * 2
    b = [np.zeros(8, int)] * 2
    c = paired_runs(a, b)
    assert c.estimate == 1 and c.p_value == pytest.approx(2 / 2 ** 8) and c.verdict == "differs"
    same = paired_runs(a, a)
    assert same.estimate == 0 and same.p_value == 1 and same.verdict == "within noise"


def test_unpaired_accuracies_by_hand():
    a, b, n = [0.80, 0.82, 0.78], [0.75, 0.79], 500
    pa, pb = np.mean(a), np.mean(b)
    seed = [(np.var(a, ddof=1) / 3, 2), (np.var(b, ddof=1) / 2, 1)]
    binomial = [(pa * (1 - pa) / n, n - 1), (pb * (1 - pb) / n, n - 1)]
    groups = [(sum(v for v, _ in seed), _welch_df(seed)), (sum(v for v, _ in binomial), _welch_df(binomial))]
    se = math.sqrt(sum(v for v, _ in groups))
    c = unpaired_accuracies(a, n, b, n)
    assert c.estimate == pytest.approx(pa - pb)
    assert c.high - c.estimate == pytest.approx(_cochran_cox(groups) * se, rel=1e-9)
    assert c.n_examples == n and c.n_seeds == (3, 2)


def test_unpaired_accuracies_one_seed_each_is_the_two_proportion_z():
    c = unpaired_accuracies([0.80], 400, [0.74], 300)
    se = math.sqrt(0.8 * 0.2 / 400 + 0.74 * 0.26 / 300)
    assert c.p_value == pytest.approx(2 * st.norm.sf(0.06 / se), rel=1e-9)
    assert c.high - c.estimate == pytest.approx(st.norm.isf(0.025) * se, rel=1e-9)
    assert math.isinf(c.df) and c.method.startswith("z")


def test_unpaired_accuracies_with_an_unknown_number_of_examples_is_within_noise():
    c = unpaired_accuracies([0.9, 0.91], None, [0.5, 0.52], 100)
    assert c.verdict == "within noise" and math.isinf(c.high) and math.isinf(c.low) and math.isnan(c.p_value)


# --- Holm --------------------------------------------------------------------------------------------------------

def test_holm_on_a_hand_worked_example():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> running max 0.06
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm_adjust([]) == []
    out = holm_adjust([0.01, float("nan"), 0.02])
    assert math.isnan(out[1]) and out[0] == pytest.approx(0.03) and out[2] == pytest.approx(0.04)


def test_holm_controls_the_family_and_the_verdicts_follow_it():
    a, b = table_arrays(50, 14, 4, 20)  # p = 0.031: differs alone
    one = mcnemar(a, b)
    assert one.verdict == "differs" and one.p_adjusted is None and one.family == 1
    family = holm([one, one, one])
    assert all(c.family == 3 and c.p_adjusted == pytest.approx(3 * one.p_value) for c in family)
    assert all(c.verdict == "within noise" for c in family)
    assert "Holm over 3" in family[0].text and family[0].p_value == one.p_value
    # the interval shown is the comparison's own, so the text says it is unadjusted and gives the p that decides
    assert f"[95% CI, unadjusted {one.low:+.3f}, {one.high:+.3f}]" in family[0].text
    assert f"adjusted p {3 * one.p_value:.3g}" in family[0].text and "unadjusted" not in one.text


# --- verdicts, text and the degenerate cases ---------------------------------------------------------------------

def test_superiority_rule_on_constructed_numbers():
    assert seed_test([0.019, 0.020, 0.021]).verdict == "supported"
    assert seed_test([0.019, 0.020, 0.021], margin=0.01).verdict == "supported"
    assert seed_test([0.019, 0.020, 0.021], margin=0.03).verdict == "not supported"  # reliably under what matters
    assert seed_test([-0.1, -0.12, -0.11]).verdict == "not supported"
    assert seed_test([0.1, -0.1, 0.02]).verdict == "mixed"
    assert seed_test([0.1, 0.12]).verdict == "mixed"  # mean/se = 11 but t(1 df) needs 12.7: two seeds say little
    assert seed_test([0.1, 0.101]).verdict == "supported"


def test_equivalence_and_noninferiority_rules():
    near = [0.004, -0.006, 0.001, 0.009]
    assert equivalence(near, 0.02).verdict == "supported"
    assert equivalence([0.10, 0.11, 0.12], 0.02).verdict == "not supported"
    assert equivalence([0.1, -0.1, 0.02], 0.02).verdict == "mixed"
    assert seed_test(near, 0.02, "noninferiority").verdict == "supported"
    assert seed_test([-0.10, -0.11, -0.12], 0.02, "noninferiority").verdict == "not supported"
    assert seed_test([-0.02, 0.01, -0.04], 0.02, "noninferiority").verdict == "mixed"
    with pytest.raises(ValueError, match="margin > 0"):
        equivalence(near, 0.0)
    with pytest.raises(ValueError, match="claim"):
        seed_test(near, 0.0, "better")
    with pytest.raises(ValueError, match="margin"):
        seed_test(near, -0.01)


def test_degenerate_values():
    assert seed_test([1e-12] * 3).verdict == "mixed"  # no spread, no margin: the sign alone decides nothing
    assert seed_test([1e-12] * 3, margin=0.01).verdict == "not supported"
    assert seed_test([0.2, 0.2]).verdict == "mixed"
    assert seed_test([0.2, 0.2], margin=0.01).verdict == "supported"  # a noiseless measurement beyond the margin
    assert seed_test([0.0, 0.0, 0.0], margin=0.01).verdict == "not supported"
    assert seed_test([0.01] * 3, margin=0.01).verdict == "mixed"  # right at the margin
    assert seed_test([-0.005] * 3, 0.01, "noninferiority").verdict == "supported"
    assert seed_test([-0.005] * 3, 0.0, "noninferiority").verdict == "mixed"
    assert equivalence([0.005] * 3, 0.01).verdict == "supported"
    assert equivalence([0.05] * 3, 0.01).verdict == "not supported"
    # round-off is not spread: values equal to 1e-12 of their size count as equal
    assert seed_test([0.1 + 0.2, 0.3, 0.3]).verdict == "mixed"
    for claim, margin in (("superiority", 0.0), ("equivalence", 0.1), ("noninferiority", 0.1)):
        for values in ([0.3], [], [0.1, float("nan"), 0.2], [0.1, float("inf")]):
            c = seed_test(values, margin, claim)
            assert c.verdict == "mixed", (claim, values)
            assert math.isnan(c.p_value) and c.method.startswith("no test")


def test_text_band_and_dict():
    a, b = table_arrays(60, 9, 7, 24)
    c = mcnemar(a, b)
    assert c.band == f"{c.estimate:+.3f} [{c.low:+.3f}, {c.high:+.3f}]"
    assert c.text == f"{c.estimate:+.3f} [95% CI {c.low:+.3f}, {c.high:+.3f}] (McNemar exact): within noise"
    d = c.to_dict()
    assert d["verdict"] == "within noise" and d["significant"] is False and d["text"] == c.text
    assert d["n_seeds"] == (1, 1) and json.loads(json.dumps(d))["estimate"] == c.estimate
    e = equivalence([0.004, -0.006, 0.001, 0.009], 0.02)
    assert e.text.startswith("+0.002 [90% CI") and "equivalence, margin 0.02" in e.text and e.level == 0.9
    assert Comparison(0.0, -1.0, 1.0, 0.5, "x", None).verdict == "within noise"
    assert ALPHA == 0.05 and "Holm" in stats.RULE and "margin" in stats.RULE


def test_every_claim_verdict_is_one_of_three_on_a_grid_of_numbers():
    for values, margin, claim in product(([0.1, 0.2], [-0.3, -0.2, -0.25], [0.0, 0.01, -0.01]),
                                         (0.0, 0.05), ("superiority", "noninferiority")):
        assert seed_test(values, margin, claim).verdict in ("supported", "not supported", "mixed")
