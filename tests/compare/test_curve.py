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
    assert lp4["gap"] == pytest.approx(0.06) and lp4["gap_se"] == pytest.approx(se) and lp4["verdict"] == "helps"
    assert point(summary, "linear_probe", "epoch_0")["verdict"] == "hurts"  # 0.50 vs 0.61
    assert point(summary, "full", "epoch_0")["gap"] == pytest.approx(0.0)
    assert point(summary, "full", "epoch_0")["verdict"] == "within noise"


@pytest.mark.parametrize("scratch_test, verdict", [([0.66, 0.67, 0.68], "within noise"),  # gap 0
                                                   ([0.645, 0.655, 0.665], "within noise"),  # gap +0.015, z 1.2
                                                   ([0.62, 0.63, 0.64], "helps"),  # gap +0.04, z 3.2
                                                   ([0.72, 0.73, 0.74], "hurts")])  # gap -0.06
def test_moving_scratch_flips_the_verdict(scratch_test, verdict):
    runs = {**RUNS, ("scratch", "scratch"): (RUNS[("scratch", "scratch")][0], scratch_test)}
    lp4 = point(summarize_curve(make_records(runs)), "linear_probe", "epoch_4")
    gap = 0.67 - float(np.mean(scratch_test))
    se = math.hypot(se_by_hand(RUNS[("linear_probe", "epoch_4")][1], TEST_N), se_by_hand(scratch_test, TEST_N))
    assert lp4["gap"] == pytest.approx(gap) and lp4["gap_se"] == pytest.approx(se)
    assert (abs(gap) > 2 * se) == (verdict != "within noise")
    assert lp4["verdict"] == verdict


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
    se = math.hypot(se_by_hand(RUNS[("full", "epoch_12")][1], TEST_N), se_by_hand(RUNS[("full", "epoch_4")][1], TEST_N))
    assert full["difference"] == pytest.approx(-0.08) and full["se"] == pytest.approx(se) and full["significant"]
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
    assert lp4["gap_se"] == pytest.approx(math.hypot(se_by_hand(RUNS[("linear_probe", "epoch_4")][0], VAL_N),
                                                     se_by_hand(RUNS[("scratch", "scratch")][0], VAL_N)))
    section = curve_section(s)
    assert "validation accuracy" in section.blocks[0].text and "optimistic" in section.blocks[0].text


def test_csv_header_and_rows(summary):
    text = curve_csv(summary)
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    assert CSV_COLUMNS == ["strategy", "checkpoint", "epoch", "source_val_accuracy", "n", "mean", "std", "gap",
                           "gap_se", "verdict"]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 6  # 2 strategies x 3 checkpoints; scratch is the baseline, not a row
    row = next(r for r in rows if r["strategy"] == "linear_probe" and r["checkpoint"] == "epoch_4")
    assert row["epoch"] == "4" and row["n"] == "3" and float(row["source_val_accuracy"]) == 0.70
    assert float(row["mean"]) == pytest.approx(0.67) and float(row["gap"]) == pytest.approx(0.06)
    assert float(row["std"]) == pytest.approx(0.01) and row["verdict"] == "helps"


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
    assert "test accuracy" in text.text and "2 standard errors" in text.text
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
    assert p["std"] == 0.0 and p["se"] is None and p["gap_se"] is None and p["verdict"] == "within noise"
    json.dumps(s, allow_nan=False)
    curve_section(s)  # renders without a noise band


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
