"""The transfer curve's analysis and rendering, on hand-made records whose numbers are known."""
from __future__ import annotations

import copy
import csv
import io
import json
import math
import sys

import numpy as np
import pytest
from scipy import stats as st

from transferlab import stats
from transferlab.compare.curve import CSV_COLUMNS, TITLE, curve_csv, curve_figure, curve_section, summarize_curve
from transferlab.errors import ConfigError
from transferlab.sections import Bullets, Figure, Table, Text

VAL_N, TEST_N = 200, 5000
SOURCE = {"epoch_0": (0, 0.30), "epoch_4": (4, 0.70), "epoch_12": (12, 0.85)}
# (strategy, checkpoint) -> (val accuracies, test accuracies) over seeds 0, 1, 2.
# linear_probe: validation picks epoch 4, test would pick epoch 12 (selection and test disagree on purpose).
# full: validation picks epoch 4, and the last checkpoint (epoch 12) is lower on test, beyond noise.
RUNS = {
    ("linear_probe", "epoch_0"): ([0.50, 0.52, 0.54], [0.49, 0.50, 0.51]),
    ("linear_probe", "epoch_4"): ([0.70, 0.72, 0.71], [0.66, 0.67, 0.68]),
    ("linear_probe", "epoch_12"): ([0.66, 0.68, 0.67], [0.72, 0.73, 0.74]),
    ("full", "epoch_0"): ([0.60, 0.62, 0.61], [0.60, 0.61, 0.62]),
    ("full", "epoch_4"): ([0.79, 0.80, 0.81], [0.77, 0.78, 0.79]),
    ("full", "epoch_12"): ([0.73, 0.74, 0.75], [0.69, 0.70, 0.71]),
    ("scratch", "scratch"): ([0.60, 0.61, 0.62], [0.60, 0.61, 0.62]),
}


def make_records(runs: dict = RUNS) -> list[dict]:
    out = []
    for (strategy, checkpoint), (vals, tests) in runs.items():
        epoch, source = SOURCE.get(checkpoint, (None, None))
        for seed, (v, t) in enumerate(zip(vals, tests)):
            out.append({"checkpoint": checkpoint, "epoch": epoch, "source_val_accuracy": source,
                        "strategy": strategy, "seed": seed, "val_accuracy": v, "val_n": VAL_N,
                        "test_accuracy": t, "test_n": TEST_N})
    return out


def point(summary: dict, strategy: str, checkpoint: str) -> dict:
    return next(p for p in summary["strategies"][strategy]["points"] if p["checkpoint"] == checkpoint)


def se_by_hand(values: list[float], n: int) -> float:
    # binomial error of the mean accuracy on n examples and the seed error, in quadrature
    p = float(np.mean(values))
    return math.sqrt(p * (1 - p) / n + np.std(values, ddof=1) ** 2 / len(values))


def by_hand(a: list[float], b: list[float], n: int) -> dict:
    """mean(a) - mean(b) from per-seed accuracies scored on n examples: the comparison `stats.unpaired_accuracies`
    makes of these lists alone (not through the curve's records), its standard error checked against the closed
    formula se^2 = s_a^2/k_a + s_b^2/k_b + p_a(1-p_a)/n + p_b(1-p_b)/n: the 95% interval is estimate ± t se, t the
    97.5% quantile of its reported df."""
    c = stats.unpaired_accuracies(a, n, b, n)
    se = math.hypot(se_by_hand(a, n), se_by_hand(b, n))
    assert c.estimate == pytest.approx(float(np.mean(a) - np.mean(b)))
    assert (c.high - c.low) / 2 == pytest.approx(st.t.isf(0.025, c.df) * se, rel=1e-6)
    assert c.low < c.estimate < c.high and (c.p_value < 0.05) == (c.low > 0 or c.high < 0)
    return {"gap": c.estimate, "se": se, "low": c.low, "high": c.high, "p": c.p_value}


def holm_by_hand(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: the i-th smallest p times (m - i), a running maximum, capped at 1."""
    m, adjusted, running = len(p_values), [0.0] * len(p_values), 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: p_values[j])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def gaps_by_hand(runs: dict = RUNS, which: int = 1, n: int = TEST_N) -> dict:
    """Every (strategy, checkpoint) minus scratch on the metric (which: 0 val, 1 test), Holm over the curve's gaps
    as one family, and the verdict: helps / hurts when the adjusted p < 0.05, else within noise."""
    scratch = runs[("scratch", "scratch")][which]
    keys = [k for k in runs if k[0] != "scratch"]
    found = {k: by_hand(runs[k][which], scratch, n) for k in keys}
    for k, p_adj in zip(keys, holm_by_hand([found[k]["p"] for k in keys])):
        d = found[k]
        d["p_adjusted"] = p_adj
        d["verdict"] = "within noise" if p_adj >= 0.05 else "helps" if d["gap"] > 0 else "hurts"
    return found


def band(d: dict) -> str:
    return f"{d['gap']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


@pytest.fixture
def summary() -> dict:
    return summarize_curve(make_records())


def test_means_and_stds_are_numpys(summary):
    assert summary["metric"] == "test_accuracy"
    for (strategy, checkpoint), (vals, tests) in RUNS.items():
        p = summary["scratch"] if strategy == "scratch" else point(summary, strategy, checkpoint)
        assert p["n"] == 3 and p["seeds"] == [0, 1, 2] and p["n_examples"] == TEST_N and p["val_n"] == VAL_N
        assert p["mean"] == pytest.approx(np.mean(tests)) and p["std"] == pytest.approx(np.std(tests, ddof=1))
        assert p["val_mean"] == pytest.approx(np.mean(vals)) and p["val_std"] == pytest.approx(np.std(vals, ddof=1))
    json.dumps(summary, allow_nan=False)  # strict JSON


def test_points_ordered_by_epoch_and_source_curve(summary):
    assert list(summary["strategies"]) == ["linear_probe", "full"]
    for s in summary["strategies"].values():
        assert [p["epoch"] for p in s["points"]] == [0, 4, 12]
    assert [(c["epoch"], c["source_val_accuracy"]) for c in summary["source_curve"]] == [(0, 0.30), (4, 0.70),
                                                                                         (12, 0.85)]
    # records in any order give the same summary
    assert summarize_curve(make_records()[::-1])["strategies"]["full"]["points"][0]["checkpoint"] == "epoch_0"


def test_gap_and_verdicts(summary):
    lp4 = point(summary, "linear_probe", "epoch_4")
    scratch_test = RUNS[("scratch", "scratch")][1]
    # by hand: 0.67 - 0.61 = +0.06; se = sqrt(.67*.33/5000 + .01²/3 + .61*.39/5000 + .01²/3) = 0.012588
    se = math.hypot(se_by_hand(RUNS[("linear_probe", "epoch_4")][1], TEST_N), se_by_hand(scratch_test, TEST_N))
    assert se == pytest.approx(0.012588, abs=1e-6)
    hand = gaps_by_hand()
    assert hand[("linear_probe", "epoch_4")]["se"] == pytest.approx(se)
    # the 95% interval: +0.06 ± 2.30 se (a t, not z: the seed parts have 2 df each), [+0.031, +0.089]
    assert lp4["gap"] == pytest.approx(0.06)
    assert (lp4["gap_low"], lp4["gap_high"]) == pytest.approx((0.031, 0.089), abs=1e-3)
    for (strategy, checkpoint), d in hand.items():  # every point of the curve against the hand computation
        p = point(summary, strategy, checkpoint)
        assert p["gap"] == pytest.approx(d["gap"]), (strategy, checkpoint)
        assert (p["gap_low"], p["gap_high"]) == pytest.approx((d["low"], d["high"]), abs=1e-9), (strategy, checkpoint)
        assert p["gap_p"] == pytest.approx(d["p_adjusted"], rel=1e-6), (strategy, checkpoint)
        assert p["verdict"] == d["verdict"], (strategy, checkpoint)
        assert {"se", "gap_se", "gap_z"}.isdisjoint(p)
    # Holm over the 6 gaps (one family): lp4's p 0.0021 is the 5th smallest, so x2, 0.0042: still helps
    assert lp4["gap_p"] == pytest.approx(2 * hand[("linear_probe", "epoch_4")]["p"])
    assert lp4["verdict"] == "helps"
    assert point(summary, "linear_probe", "epoch_0")["verdict"] == "hurts"  # 0.50 vs 0.61
    assert point(summary, "full", "epoch_0")["gap"] == pytest.approx(0.0)
    assert point(summary, "full", "epoch_0")["verdict"] == "within noise"
    assert point(summary, "full", "epoch_0")["gap_p"] == pytest.approx(1.0)


# linear_probe at epoch 4 scores 0.67 ± 0.01 on test; scratch is moved. The gap's own 95% interval is about
# ± 0.029 (2.3 se, se 0.0126); its verdict uses the p-value after Holm over the curve's 6 gaps, so a gap whose own
# interval clears 0 can still be within noise (-0.035 below), while +0.04 and -0.06 clear both.
@pytest.mark.parametrize("scratch_test, own_beyond_noise, verdict", [
    ([0.66, 0.67, 0.68], False, "within noise"),  # gap 0, p 1
    ([0.645, 0.655, 0.665], False, "within noise"),  # gap +0.015: [-0.014, +0.044], p 0.26
    ([0.62, 0.63, 0.64], True, "helps"),  # gap +0.04: [+0.011, +0.069], p 0.014; Holm (x2) 0.028
    ([0.695, 0.705, 0.715], True, "within noise"),  # gap -0.035: [-0.064, -0.006], p 0.024; Holm (x3) 0.070
    ([0.72, 0.73, 0.74], True, "hurts"),  # gap -0.06: [-0.089, -0.032], p 0.002; Holm 0.008
])
def test_moving_scratch_flips_the_verdict(scratch_test, own_beyond_noise, verdict):
    runs = {**RUNS, ("scratch", "scratch"): (RUNS[("scratch", "scratch")][0], scratch_test)}
    lp4 = point(summarize_curve(make_records(runs)), "linear_probe", "epoch_4")
    gap = 0.67 - float(np.mean(scratch_test))
    se = math.hypot(se_by_hand(RUNS[("linear_probe", "epoch_4")][1], TEST_N), se_by_hand(scratch_test, TEST_N))
    hand = gaps_by_hand(runs)[("linear_probe", "epoch_4")]
    assert hand["gap"] == pytest.approx(gap) and hand["se"] == pytest.approx(se)
    assert lp4["gap"] == pytest.approx(gap)
    assert (lp4["gap_low"], lp4["gap_high"]) == pytest.approx((hand["low"], hand["high"]), abs=1e-9)
    assert lp4["gap_p"] == pytest.approx(hand["p_adjusted"], rel=1e-6)
    # the unadjusted test: its interval excludes 0 exactly when its own p is below 0.05
    assert (hand["low"] > 0 or hand["high"] < 0) == own_beyond_noise == (hand["p"] < 0.05)
    assert (hand["p_adjusted"] < 0.05) == (verdict != "within noise")
    assert lp4["verdict"] == hand["verdict"] == verdict


def test_best_checkpoint_is_chosen_on_validation_not_test(summary):
    lp = summary["strategies"]["linear_probe"]
    test_means = {p["checkpoint"]: p["mean"] for p in lp["points"]}
    assert max(test_means, key=test_means.get) == "epoch_12"  # the fixture's test accuracy prefers epoch 12 ...
    assert lp["best"]["checkpoint"] == "epoch_4" and lp["best"]["epoch"] == 4  # ... validation picks epoch 4
    assert lp["best"]["val_mean"] == pytest.approx(0.71) and lp["best"]["mean"] == pytest.approx(0.67)
    # the last checkpoint is higher on test than the selected one, beyond noise
    assert lp["last_vs_best"]["checkpoint"] == "epoch_12"
    assert lp["last_vs_best"]["difference"] == pytest.approx(0.06) and lp["last_vs_best"]["significant"]


def test_last_checkpoint_against_best(summary):
    full = summary["strategies"]["full"]["last_vs_best"]
    # one comparison (no family): last - best = 0.70 - 0.78, its interval and p by hand, beyond noise
    hand = by_hand(RUNS[("full", "epoch_12")][1], RUNS[("full", "epoch_4")][1], TEST_N)
    assert hand["p"] < 0.05 and hand["high"] < 0
    assert full["difference"] == pytest.approx(-0.08) and full["significant"]
    assert (full["low"], full["high"]) == pytest.approx((hand["low"], hand["high"]), abs=1e-9)
    assert full["p_value"] == pytest.approx(hand["p"], rel=1e-6) and full["method"].startswith("t, ")
    assert "se" not in full
    # last = best: no difference to weigh
    runs = {k: v for k, v in RUNS.items() if k != ("full", "epoch_12")}
    full = summarize_curve(make_records(runs))["strategies"]["full"]
    assert full["best"]["checkpoint"] == full["last_vs_best"]["checkpoint"] == "epoch_4"
    assert full["last_vs_best"]["difference"] == 0 and not full["last_vs_best"]["significant"]


def test_val_ties_go_to_the_earliest_epoch():
    runs = {**RUNS, ("full", "epoch_12"): (RUNS[("full", "epoch_4")][0], [0.5, 0.5, 0.5])}
    assert summarize_curve(make_records(runs))["strategies"]["full"]["best"]["checkpoint"] == "epoch_4"


def test_metric_falls_back_to_val_when_a_test_accuracy_is_missing():
    records = make_records()
    records[5]["test_accuracy"], records[5]["test_n"] = None, None
    s = summarize_curve(records)
    assert s["metric"] == "val_accuracy" and "1 of 21" in s["metric_reason"]
    for (strategy, checkpoint), (vals, _) in RUNS.items():
        p = s["scratch"] if strategy == "scratch" else point(s, strategy, checkpoint)
        assert p["mean"] == pytest.approx(np.mean(vals)) and p["n_examples"] == VAL_N
    lp4 = point(s, "linear_probe", "epoch_4")
    assert lp4["gap"] == pytest.approx(0.71 - 0.61)
    # the interval on validation accuracy uses the validation split's n (200), so it is wider than on test
    hand = gaps_by_hand(which=0, n=VAL_N)
    d = hand[("linear_probe", "epoch_4")]
    assert d["se"] == pytest.approx(math.hypot(se_by_hand(RUNS[("linear_probe", "epoch_4")][0], VAL_N),
                                               se_by_hand(RUNS[("scratch", "scratch")][0], VAL_N)))
    assert (lp4["gap_low"], lp4["gap_high"]) == pytest.approx((d["low"], d["high"]), abs=1e-9)
    assert lp4["gap_high"] - lp4["gap_low"] > 2 * (0.089 - 0.06)  # wider than the test interval above
    for (strategy, checkpoint), d in hand.items():
        p = point(s, strategy, checkpoint)
        assert p["gap_p"] == pytest.approx(d["p_adjusted"], rel=1e-6) and p["verdict"] == d["verdict"]
    section = curve_section(s)
    assert "validation accuracy" in section.blocks[0].text and "optimistic" in section.blocks[0].text


def test_csv_header_and_rows(summary):
    text = curve_csv(summary)
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    assert CSV_COLUMNS == ["strategy", "checkpoint", "epoch", "source_val_accuracy", "n", "mean", "std", "gap",
                           "gap_low", "gap_high", "verdict"]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 6  # 2 strategies x 3 checkpoints; scratch is the baseline, not a row
    row = next(r for r in rows if r["strategy"] == "linear_probe" and r["checkpoint"] == "epoch_4")
    assert row["epoch"] == "4" and row["n"] == "3" and float(row["source_val_accuracy"]) == 0.70
    assert float(row["mean"]) == pytest.approx(0.67) and float(row["gap"]) == pytest.approx(0.06)
    assert float(row["std"]) == pytest.approx(0.01) and row["verdict"] == "helps"
    hand = gaps_by_hand()[("linear_probe", "epoch_4")]
    assert (float(row["gap_low"]), float(row["gap_high"])) == pytest.approx((hand["low"], hand["high"]), abs=1e-9)


def test_figure_is_a_png_and_leaves_pyplot_alone(summary):
    had_pyplot = "matplotlib.pyplot" in sys.modules
    before = sys.modules["matplotlib.pyplot"].get_fignums() if had_pyplot else None
    png = curve_figure(summary)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    if had_pyplot:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == before
    else:
        assert "matplotlib.pyplot" not in sys.modules


def test_section(summary):
    section = curve_section(summary)
    assert section.title == TITLE == "Transfer curve: target accuracy against pre-training length"
    assert section.data is summary
    kinds = [type(b) for b in section.blocks]
    assert kinds == [Text, Table, Figure, Bullets]
    text, table, figure, bullets = section.blocks
    assert "test accuracy" in text.text and stats.RULE in text.text  # the noise rule, stated in full
    assert len(table.rows) == 6 and all(len(r) == len(table.headers) for r in table.rows)
    assert {(r[0], r[1]) for r in table.rows} == {(s, c) for s, c in RUNS if s != "scratch"}
    assert figure.png.startswith(b"\x89PNG")
    lp = next(b for b in bullets.items if b.startswith("linear_probe: best"))
    # every number comes from the fixture: val 0.71, test 0.67; last (epoch 12) 0.06 higher
    assert "best at epoch 4 (val 0.710)" in lp and "test accuracy 0.670 ±" in lp
    assert "the last checkpoint (epoch 12) is 0.060 higher, beyond noise" in lp
    full = next(b for b in bullets.items if b.startswith("full: best"))
    assert "the last checkpoint (epoch 12) is 0.080 lower, beyond noise" in full
    gaps = next(b for b in bullets.items if b.startswith("linear_probe minus scratch"))
    assert "epoch 0 -0.110" in gaps and "hurts" in gaps and "epoch 4 +0.060" in gaps and "helps" in gaps
    # each gap as '+0.060 [+0.023, +0.097]' (its 95% interval), the numbers computed by hand
    hand = gaps_by_hand()
    for checkpoint, epoch in (("epoch_0", 0), ("epoch_4", 4), ("epoch_12", 12)):
        d = hand[("linear_probe", checkpoint)]
        assert f"epoch {epoch} {band(d)} {d['verdict']}" in gaps, checkpoint
    assert "epoch 4 +0.060 [+0.031, +0.089] helps" in gaps
    row = next(r for r in table.rows if r[:2] == ["linear_probe", "epoch_4"])
    assert row[-2:] == [band(hand[("linear_probe", "epoch_4")]), "helps"]


def test_without_scratch_there_is_no_gap():
    s = summarize_curve([r for r in make_records() if r["strategy"] != "scratch"])
    assert s["scratch"] is None
    assert all(p["gap"] is None and p["verdict"] is None for v in s["strategies"].values() for p in v["points"])
    assert next(csv.DictReader(io.StringIO(curve_csv(s))))["verdict"] == ""
    assert "No from-scratch run" in curve_section(s).blocks[0].text


def test_one_seed_and_unknown_n():
    records = [r for r in make_records() if r["seed"] == 0]
    for r in records:
        r["test_n"] = None
    s = summarize_curve(records)
    p = point(s, "linear_probe", "epoch_0")
    # n unknown: no interval (stored as None, not ±inf) and no verdict beyond noise, whatever the gap
    assert p["std"] == 0.0 and p["gap_low"] is None and p["gap_high"] is None and p["verdict"] == "within noise"
    assert all(q["verdict"] == "within noise" for v in s["strategies"].values() for q in v["points"])
    json.dumps(s, allow_nan=False)
    gaps = next(b for b in curve_section(s).blocks if isinstance(b, Bullets)).items
    assert any("epoch 0 -0.110 (n unknown, no noise band) within noise" in b for b in gaps)  # no noise band


def test_one_seed_with_known_n_is_the_binomial_z():
    """One seed each, n known: se = sqrt(pa(1-pa)/na + pb(1-pb)/nb), the 95% interval estimate ± 1.959964 se."""
    records = [r for r in make_records() if r["seed"] == 0]
    s = summarize_curve(records)
    scratch = RUNS[("scratch", "scratch")][1][0]  # 0.60
    gaps, raw = {}, {}
    for (strategy, checkpoint), (_, tests) in RUNS.items():
        if strategy == "scratch":
            continue
        pa, pb = tests[0], scratch
        se = math.sqrt(pa * (1 - pa) / TEST_N + pb * (1 - pb) / TEST_N)
        gaps[(strategy, checkpoint)] = (pa - pb, pa - pb - 1.959964 * se, pa - pb + 1.959964 * se)
        raw[(strategy, checkpoint)] = 2 * st.norm.sf(abs(pa - pb) / se)
    adjusted = dict(zip(raw, holm_by_hand(list(raw.values()))))
    for key, (gap, low, high) in gaps.items():
        p = point(s, *key)
        assert (p["gap"], p["gap_low"], p["gap_high"]) == pytest.approx((gap, low, high), abs=1e-6), key
        assert p["gap_p"] == pytest.approx(adjusted[key], rel=1e-6, abs=1e-12), key
    # full at epoch 0 scored 0.60, as scratch: within noise; linear_probe at epoch 4, 0.66 against 0.60: +0.06
    # over se 0.0097 is z 6.2, helps even after Holm
    assert point(s, "full", "epoch_0")["verdict"] == "within noise"
    assert point(s, "linear_probe", "epoch_4")["verdict"] == "helps"
    json.dumps(s, allow_nan=False)


def _paired_records(a_correct: np.ndarray, b_correct: np.ndarray) -> list[dict]:
    """full from epoch 4 and scratch, one seed each, with their per-example test correctness."""
    common = {"seed": 0, "val_accuracy": 0.5, "val_n": VAL_N, "test_n": len(a_correct)}
    return [{**common, "checkpoint": "epoch_4", "epoch": 4, "source_val_accuracy": 0.7, "strategy": "full",
             "test_accuracy": float(a_correct.mean()), "test_correct": a_correct},
            {**common, "checkpoint": "scratch", "epoch": None, "source_val_accuracy": None, "strategy": "scratch",
             "test_accuracy": float(b_correct.mean()), "test_correct": b_correct}]


@pytest.mark.parametrize("both, a_only, b_only, verdict", [(100, 30, 10, "helps"),  # McNemar p = 0.002
                                                           (60, 70, 50, "within noise")])  # p = 0.08
def test_records_with_per_example_correctness_are_compared_paired(both, a_only, b_only, verdict):
    """Runs that kept which examples they got right are compared on those examples: one run each, McNemar's exact
    test, the two-sided binomial test of the discordant examples against 1/2. Both cases score full 0.65 and
    scratch 0.55 on 200 test examples; what decides is how the runs disagree: 30 against 10 of 40 discordant
    examples is beyond noise, 70 against 50 of 120 is not."""
    n = 200
    a, b = np.zeros(n, bool), np.zeros(n, bool)
    a[:both] = b[:both] = True
    a[both:both + a_only] = True
    b[both + a_only:both + a_only + b_only] = True
    assert (a.mean(), b.mean()) == pytest.approx((0.65, 0.55))
    p = point(summarize_curve(_paired_records(a, b)), "full", "epoch_4")
    discordant = a_only + b_only
    p_hand = min(1.0, 2 * sum(math.comb(discordant, k) for k in range(max(a_only, b_only), discordant + 1))
                 / 2 ** discordant)
    assert p["gap"] == pytest.approx(0.10)
    assert p["gap_p"] == pytest.approx(p_hand, rel=1e-9)  # a family of one: Holm changes nothing
    assert p["gap_low"] < p["gap"] < p["gap_high"] and (p["gap_low"] > 0) == (verdict == "helps")
    assert p["verdict"] == verdict


def test_empty_records_is_a_config_error():
    with pytest.raises(ConfigError, match="no fine-tuning records"):
        summarize_curve([])
    with pytest.raises(ConfigError):
        summarize_curve(None)


@pytest.mark.parametrize("change, message", [
    (lambda rs: rs.append(copy.deepcopy(rs[0])), "appears twice"),
    (lambda rs: rs[0].update(epoch=None), "epoch"),
    (lambda rs: rs[0].update(val_accuracy=1.5), "val_accuracy"),
    (lambda rs: rs[0].pop("val_accuracy"), "lacks val_accuracy"),
    (lambda rs: rs[-1].update(checkpoint="epoch_0"), "both or neither"),
    (lambda rs: rs[1].update(source_val_accuracy=0.5), "another record"),
])
def test_bad_records_are_config_errors(change, message):
    records = make_records()
    change(records)
    with pytest.raises(ConfigError, match=message):
        summarize_curve(records)


def test_early_stopped_checkpoint_against_the_last():
    # the source's best validation checkpoint is epoch 4 here (not the last): full is better there on test
    source = {**SOURCE, "epoch_4": (4, 0.90)}
    records = [{**r, "source_val_accuracy": source[r["checkpoint"]][1]} if r["checkpoint"] in source else r
               for r in make_records()]
    s = summarize_curve(records)["strategies"]
    full, lp = s["full"]["early_vs_last"], s["linear_probe"]["early_vs_last"]
    assert full["epoch"] == 4 and full["last_epoch"] == 12
    assert full["difference"] == pytest.approx(0.78 - 0.70) and full["significant"]
    assert lp["difference"] == pytest.approx(0.67 - 0.73) and lp["significant"]  # early is worse for the probe
    bullets = next(b for b in curve_section(summarize_curve(records)).blocks if isinstance(b, Bullets)).items
    assert any(b.startswith("full: from the early-stopped checkpoint (epoch 4") and "better, beyond noise" in b
               for b in bullets)
    # with the last checkpoint also the source's best, early stopping changes nothing, and the sentence says so
    plain = summarize_curve(make_records())["strategies"]["full"]["early_vs_last"]
    assert plain["epoch"] == plain["last_epoch"] == 12 and plain["difference"] == 0.0
