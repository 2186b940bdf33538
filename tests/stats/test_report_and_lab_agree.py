"""The same runs get the same verdict from the comparison report and from a lab check: both go through
transferlab.stats on the runs' per-example correctness."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from transferlab import stats
from transferlab.compare.results import GridResults, RunRecord
from transferlab.labs.verdict import Check, lab_verdict
from transferlab.safe_io import save_tensors


def _runs(tmp_path, name: str, arrays: list[np.ndarray], labels: np.ndarray) -> list[RunRecord]:
    records = []
    for seed, correct in enumerate(arrays):
        folder = tmp_path / name / str(seed)
        folder.mkdir(parents=True)
        save_tensors(folder / "examples.safetensors", {"val.correct": torch.tensor(correct, dtype=torch.uint8),
                                                       "val.labels": torch.tensor(labels)})
        acc = float(np.mean(correct))
        records.append(RunRecord(name, seed, str(folder), "finished", values={"val_accuracy": acc},
                                 val={"accuracy": acc, "loss": 0.0, "n": len(correct)}))
    return records


def _arrays(rng, n: int, base: np.ndarray, gains: list[int]) -> list[np.ndarray]:
    """One array per seed: `base` with `gains[s]` wrong examples made right (a per-seed accuracy gain)."""
    out = []
    for gain in gains:
        correct = base.copy()
        correct[rng.choice(np.flatnonzero(~base), size=gain, replace=False)] = True
        out.append(correct)
    return out


@pytest.mark.parametrize("gains", [[6, 6, 6], [5, 6, 7], [1, 6, 12], [0, 1, 2]])
def test_report_and_lab_check_agree_on_the_same_runs(tmp_path, gains):
    rng = np.random.default_rng(0)
    n = 300
    labels = rng.integers(0, 10, n)
    base = rng.random(n) < 0.85  # b's correctness, the same examples for every seed
    b = [base.copy() for _ in gains]
    a = _arrays(rng, n, base, gains)  # gains of 2 / 300 = 0.0067 per image: [6, 6, 6] is +0.020 on every seed
    results = GridResults("out", "m", "d", "val_accuracy", ["a", "b"],
                          _runs(tmp_path, "a", a, labels) + _runs(tmp_path, "b", b, labels), {}, {"seeds": [0, 1, 2]})
    report = results.compare("a", "b")
    assert report == stats.paired_runs(a, b)  # the report reads the runs' own arrays
    diffs = [float(x.mean() - y.mean()) for x, y in zip(a, b)]
    check = Check("a beats b", "accuracy of a minus b", diffs, paired=(a, b))
    expected = "supported" if report.significant and report.estimate > 0 else \
        "not supported" if report.significant or report.high < 0 else "mixed"
    assert check.decide() == expected
    assert lab_verdict([check]) == expected
    assert lab_verdict([check.to_dict()]) == expected  # read back from a result.json


def test_the_issues_numbers_on_300_images():
    """Per-seed gains of +0.019, +0.020, +0.021 on the same images over 3 seeds (1,000 images, so the gains are
    whole images): one verdict, whichever tool reads them."""
    rng = np.random.default_rng(1)
    n = 1000
    base = rng.random(n) < 0.85
    a = _arrays(rng, n, base, [19, 20, 21])
    b = [base.copy() for _ in range(3)]
    report = stats.paired_runs(a, b)
    check = Check("a beats b", "a minus b", [0.019, 0.020, 0.021], paired=(a, b))
    assert check.comparison().estimate == pytest.approx(0.020)
    assert (check.decide() == "supported") == (report.significant and report.estimate > 0)
