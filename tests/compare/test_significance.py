"""The one noise rule behind every flag and "best" sentence of the report, checked against numbers by hand."""
from __future__ import annotations

import math

import pytest

from transferlab.compare import results as R
from transferlab.compare.report import ReportContext, gaps_section, reading_section
from transferlab.compare.significance import Accuracy, compare_accuracies


def test_readme_demo_linear_probe_vs_scratch_is_within_noise():
    # by hand: se = sqrt(.873*.127/300 + .880*.120/300) = sqrt(.00036957 + .000352) = 0.026862
    d = compare_accuracies(Accuracy.of([0.873], n=300), Accuracy.of([0.880], n=300))
    assert d.difference == pytest.approx(-0.007)
    assert d.se == pytest.approx(0.026862, abs=1e-6)
    assert d.z == pytest.approx(-0.2606, abs=1e-3)
    assert not d.significant
    assert d.text == "within noise (-0.007 ± 0.027)"


def test_large_gap_on_small_split_is_significant():
    # by hand: se = sqrt(.95*.05/153 + .47*.53/153) = sqrt(.00031046 + .0016281) = 0.044029; z = 0.48/0.044 = 10.9
    d = compare_accuracies(Accuracy.of([0.95], n=153), Accuracy.of([0.47], n=153))
    assert d.se == pytest.approx(0.044029, abs=1e-6)
    assert d.z == pytest.approx(10.902, abs=1e-2)
    assert d.significant and d.text == "difference +0.480 ± 0.044"


def test_seed_spread_widens_the_band():
    one = compare_accuracies(Accuracy.of([0.94], n=300), Accuracy.of([0.88], n=300))
    # by hand, one seed: se = sqrt(.94*.06/300 + .88*.12/300) = sqrt(.000188 + .000352) = 0.023238; z = 2.58
    assert one.se == pytest.approx(0.023238, abs=1e-6) and one.significant
    a, b = Accuracy.of([0.93, 0.95], n=300), Accuracy.of([0.86, 0.90], n=300)
    # seed se = sample std / sqrt(2): 0.014142/1.4142 = 0.01 and 0.028284/1.4142 = 0.02
    assert a.se_seeds == pytest.approx(0.01) and b.se_seeds == pytest.approx(0.02)
    assert a.se == pytest.approx(math.sqrt(0.000188 + 0.0001)) and b.se == pytest.approx(math.sqrt(0.000352 + 0.0004))
    two = compare_accuracies(a, b)
    # se = sqrt(.000288 + .000752) = 0.032249; z = 0.06 / 0.032249 = 1.86: the same means, now within noise
    assert two.difference == pytest.approx(one.difference)
    assert two.se == pytest.approx(0.032249, abs=1e-6) and two.se > one.se and not two.significant


def test_degenerate_cases():
    assert not compare_accuracies(Accuracy(1.0, 50), Accuracy(1.0, 50)).significant  # se 0, no difference
    unknown = compare_accuracies(Accuracy(0.9, None), Accuracy(0.1, 100))  # n unknown: never a verdict
    assert math.isinf(unknown.se) and not unknown.significant


def test_overfit_gap_uses_one_epoch():
    metrics = {"val": {"accuracy": 0.80, "loss": 0.5, "n": 200}, "test": None, "trainable_params": 1,
               "total_params": 1, "trainable_share": 1.0, "train_seconds": 3.0, "samples_per_second": 100.0,
               "peak_memory_mb": 0.0, "best_epoch": 2, "epochs_run": 3, "final_train_accuracy": 0.99}
    history = [{"epoch": 1, "train_accuracy": 0.60, "val_accuracy": 0.70, "seconds": 1.0, "samples_per_second": 400.0},
               {"epoch": 2, "train_accuracy": 0.85, "val_accuracy": 0.80, "seconds": 1.0, "samples_per_second": 400.0},
               {"epoch": 3, "train_accuracy": 0.99, "val_accuracy": 0.78, "seconds": 1.0, "samples_per_second": 400.0}]
    v = R.run_values(metrics, history)
    # epoch 2's train minus epoch 2's val, not the final epoch's 0.99 minus the best epoch's 0.80
    assert v["best_epoch_train_accuracy"] == 0.85 and v["best_epoch_val_accuracy"] == 0.80
    assert v["overfit_gap"] == pytest.approx(0.05)
    assert R.run_values(metrics, [])["overfit_gap"] is None  # no history: no mixed-epoch number


def _summary(name: str, acc: float, params: int, n: int = 300, train: float | None = None) -> R.StrategySummary:
    mean = {f: None for f in R.SUMMARY_FIELDS}
    std = dict(mean)
    train = acc if train is None else train
    mean.update(val_accuracy=acc, trainable_params=params, trainable_share=params / 3383818,
                best_epoch_train_accuracy=train, best_epoch_val_accuracy=acc, overfit_gap=train - acc)
    std.update(val_accuracy=0.0, best_epoch_train_accuracy=0.0, best_epoch_val_accuracy=0.0)
    return R.StrategySummary(name, 1, 0, [], mean, std, n={"val_accuracy": n}, train_n=1000)


def _results(summaries: dict) -> R.GridResults:
    R.flag(summaries, "val_accuracy")
    return R.GridResults("out", "m", "d", "val_accuracy", list(summaries), [], summaries, {"seeds": [0]})


def test_readme_demo_report_sentences():
    demo = {"linear_probe": (0.873, 12810), "freeze": (0.953, 3328314), "lp_ft": (0.913, 3383818),
            "full": (0.953, 3383818), "scratch": (0.880, 3383818)}
    r = _results({k: _summary(k, a, p) for k, (a, p) in demo.items()})
    assert not r.summaries["linear_probe"].transfer_hurt  # 2 images of 300: within noise
    section = reading_section(ReportContext(r, None))
    items = section.blocks[0].items
    text = "\n".join(items)
    assert "Transfer hurt" not in text
    assert "linear_probe vs scratch: 0.873 vs 0.880, within noise (+0.007 ± 0.027)" in text
    assert items[0] == ("Best: **freeze** (validation accuracy 0.953); not separable from full (0.953), "
                        "lp_ft (0.913) within noise.")
    assert section.data["not_separable_from"] == ["full", "lp_ft"]
    assert "Noise rule: a difference counts when it exceeds 2 standard errors" in text
    row = next(row for row in gaps_section(ReportContext(r, None)).blocks[1].rows if row[0] == "linear_probe")
    assert row[1] == "+0.007 ± 0.027 within noise"


def test_transfer_hurt_and_clear_best_beyond_noise():
    r = _results({"linear_probe": _summary("linear_probe", 0.47, 100, n=153),
                  "full": _summary("full", 0.60, 1000, n=153), "scratch": _summary("scratch", 0.95, 1000, n=153)})
    assert r.summaries["linear_probe"].transfer_hurt and r.summaries["full"].transfer_hurt
    items = reading_section(ReportContext(r, None)).blocks[0].items
    assert "**Transfer hurt** for linear_probe: scratch 0.950 vs 0.470, difference +0.480 ± 0.044." in items
    assert items[0].startswith("Best: **full** (validation accuracy 0.600), ahead of linear_probe (0.470) "
                               "beyond noise: difference +0.130")


def test_overfit_flag_needs_gap_above_threshold_beyond_noise():
    r = _results({"full": _summary("full", 0.70, 10, n=300, train=0.99),
                  "tiny": _summary("tiny", 0.70, 10, n=5, train=0.90)})
    assert r.summaries["full"].overfits  # 29 points on 300 and 1000 examples
    # 20 points, but on 5 validation images: se = sqrt(.9*.1/1000 + .7*.3/5) = 0.2056, z < 1
    assert r.summaries["tiny"].overfit_test["se"] == pytest.approx(math.sqrt(0.9 * 0.1 / 1000 + 0.7 * 0.3 / 5))
    assert not r.summaries["tiny"].overfits
