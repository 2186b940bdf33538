"""Lab `domain-adaptation`: its checks on constructed per-example correctness (paired on the same examples,
decided over seeds and examples, the arms of one corruption Holm-adjusted together), and its --quick run alone
(`pytest -m slow`): every verdict recomputed from the per-example arrays its measures hold."""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from transferlab import stats
from transferlab.labs import lab_verdict
from transferlab.labs.base import read_key
from transferlab.labs.domain_adaptation import LAB, MARGIN, lab_checks, setting

N = 400
SEEDS = [0, 1]


def _correct(k_right: int, first: int = 0) -> list[int]:
    """N examples: the first `first` right, then `k_right` more from 200 on (source-only gets 0-199 right)."""
    x = np.zeros(N, int)
    x[:first] = 1
    x[200:200 + k_right] = 1
    return x.tolist()


def _scores(gains: dict[str, tuple[int, int]]) -> tuple[dict, dict]:
    """Source-only: every example right on clean images, the first 200 on corrupted ones; an arm with gain (a, b)
    gets a (seed 0) and b (seed 1) more of the others right."""
    clean = {s: [1] * N for s in SEEDS}
    shifted = {("source", "noise", s): _correct(0, 200) for s in SEEDS}
    for arm, per_seed in gains.items():
        for s, k in zip(SEEDS, per_seed):
            shifted[(arm, "noise", s)] = _correct(k, 200)
    return clean, shifted


def test_checks_are_paired_and_the_arms_are_one_holm_family():
    # "strong" gains 60 and 61 examples (p ~ 0); "weak" and "weak2" 7 and 8 (p ~ 0.03 each, alone supported):
    # Holm over the three arms doubles the two weak p-values past 0.05
    gains = {"strong": (60, 61), "weak": (7, 8), "weak2": (7, 8)}
    clean, shifted = _scores(gains)
    checks = lab_checks(clean, shifted, ["noise"], list(gains), SEEDS)
    assert [c.name for c in checks] == ["the shift costs accuracy (noise)", "strong recovers part of it (noise)",
                                        "weak recovers part of it (noise)", "weak2 recovers part of it (noise)"]
    shift, strong, weak, weak2 = checks
    assert shift.values == [0.5, 0.5] and shift.paired is not None and shift.decide() == "supported"
    source = [shifted[("source", "noise", s)] for s in SEEDS]
    raw = {arm: replace(stats.paired_runs([shifted[(arm, "noise", s)] for s in SEEDS], source), claim="superiority",
                        margin=MARGIN) for arm in gains}
    assert 0.0167 < raw["weak"].p_value < 0.05 and raw["weak"].verdict == "supported"  # alone it would be
    adjusted = stats.holm_adjust([raw[arm].p_value for arm in gains])
    for check, arm, p in zip((strong, weak, weak2), gains, adjusted):
        comparison = check.comparison()
        assert check.family == 3 and comparison.p_adjusted == pytest.approx(p) and comparison.family == 3
        assert comparison.estimate == pytest.approx(raw[arm].estimate) and comparison.low == raw[arm].low
        assert check.values == pytest.approx([g / N for g in gains[arm]])
    assert strong.decide() == "supported"
    assert weak.decide() == "mixed" and weak2.decide() == "mixed"  # Holm: 2 x 0.03 is beyond 0.05
    assert lab_verdict(checks) == "mixed"
    record = weak.to_dict()  # result.json: the adjusted comparison, which lab_verdict reads for a paired check
    assert record["paired"] and record["comparison"]["family"] == 3 and record["verdict"] == "mixed"
    assert lab_verdict([c.to_dict() for c in checks]) == "mixed"
    assert "Holm over 3" in record["comparison"]["text"]


def test_an_arm_that_loses_accuracy_is_not_supported_and_no_shift_is_not_a_cost():
    clean, shifted = _scores({"worse": (-1, -1)})
    for s in SEEDS:  # "worse" gets 60 fewer right than source-only; clean images score as corrupted ones
        shifted[("worse", "noise", s)] = _correct(0, 140)
        clean[s] = shifted[("source", "noise", s)]
    shift, worse = lab_checks(clean, shifted, ["noise"], ["worse"], SEEDS)
    assert worse.values == pytest.approx([-0.15, -0.15]) and worse.decide() == "not supported"
    assert shift.values == [0.0, 0.0] and shift.decide() == "not supported"  # no cost: short of the margin
    assert lab_verdict([shift, worse]) == "not supported"


def test_the_quick_mode_is_smaller_than_the_full_one():
    quick, full = setting(True), setting(False)
    assert set(quick["kinds"]) < set(full["kinds"]) and set(quick["uda"]) < set(full["uda"])
    assert quick["options"]["epochs"] <= full["options"]["epochs"]
    assert LAB.name == "domain-adaptation" and LAB.quick_minutes <= 2 and LAB.minutes <= 15


@pytest.mark.slow
def test_quick_run_scores_every_arm_on_the_same_test_images(tmp_path):
    from transferlab.cli import main

    out = tmp_path / "lab"
    assert main(["lab", "run", LAB.name, "--quick", "--out", str(out)]) == 0
    r = json.loads((out / "result.json").read_text())
    assert r["quick"] is True and r["seeds"] == SEEDS and r["readings"]
    for reading in r["readings"]:
        assert read_key(out / reading["file"], reading["key"]) == reading["value"]
    for run in r["runs"]:
        assert (out / run / "metrics.json").is_file()
    kinds, arms = setting(True)["kinds"], ["adabn", "tent", *setting(True)["uda"]]
    measures = {p.stem: json.loads(p.read_text()) for p in (out / "measures").glob("*.json")}
    files = measures["source_s0_clean"]["files"]
    assert len(files) == 450 and all(m["files"] == files and m["split"] == "test" for m in measures.values())
    for kind in kinds:
        for arm in ("adabn", "tent"):  # adapted on the corrupted validation images, never the test ones
            adapt = json.loads((Path(measures[f"{arm}_{kind}_s0"]["adapted_run"]) / "adapt.json").read_text())
            assert adapt["split"] == "val" and adapt["method"] == arm
    # every verdict from the per-example arrays the measures hold: paired, Holm over the arms of a corruption
    clean = {s: measures[f"source_s{s}_clean"]["correct"] for s in SEEDS}
    shifted = {("source", k, s): measures[f"source_s{s}_{k}"]["correct"] for k in kinds for s in SEEDS}
    shifted |= {(a, k, s): measures[f"{a}_{k}_s{s}"]["correct"] for a in arms for k in kinds for s in SEEDS}
    expected = [c.to_dict() for c in lab_checks(clean, shifted, kinds, arms, SEEDS)]
    assert [c["name"] for c in r["checks"]] == [c["name"] for c in expected]
    for got, want in zip(r["checks"], expected):
        assert got["paired"] and got["verdict"] == want["verdict"] == got["comparison"]["verdict"]
        assert got["values"] == pytest.approx(want["values"]) and got["margin"] == MARGIN
    assert r["verdict"] == lab_verdict(r["checks"])
    assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"Lab `{LAB.name}`" in (out / "README.md").read_text()
