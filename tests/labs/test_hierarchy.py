"""Lab `hierarchy`: the rank correlation and the probe-drop formula its checks are built from."""
from __future__ import annotations

import pytest

from transferlab.errors import ConfigError
from transferlab.labs import LabContext, hierarchy
from transferlab.labs.base import lab_data
from transferlab.labs.hierarchy import accuracy_drop, spearman


def _spearman_no_ties(xs, ys) -> float:
    """The textbook formula 1 - 6 sum d^2 / (n (n^2 - 1)), valid without ties."""
    rank = lambda v: {x: r for r, x in enumerate(sorted(v))}  # noqa: E731
    rx, ry = rank(xs), rank(ys)
    n = len(xs)
    return 1 - 6 * sum((rx[x] - ry[y]) ** 2 for x, y in zip(xs, ys)) / (n * (n * n - 1))


def test_spearman_matches_the_rank_formula_on_a_drift_profile():
    drift = [1e-5, 2e-5, 3e-4, 2e-3, 0.02, 0.07, 0.21, 0.15, 0.17]  # 1 - CKA by depth, blocks.5 peaks early
    assert spearman(range(9), drift) == pytest.approx(_spearman_no_ties(list(range(9)), drift))
    # the last three groups rank 8, 6, 7 instead of 6, 7, 8: sum d^2 = 4 + 1 + 1
    assert spearman(range(9), drift) == pytest.approx(1 - 6 * 6 / (9 * 80))
    assert spearman(range(4), [4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_spearman_averages_tied_ranks():
    # ties at the top: ranks 1, 2, 3.5, 3.5 against 1..4 -> Pearson of the ranks
    assert spearman(range(4), [0.1, 0.2, 0.5, 0.5]) == pytest.approx(0.9486832980505138)


def test_accuracy_drop_is_best_minus_last():
    assert accuracy_drop([0.6, 0.93, 0.9, 0.82]) == pytest.approx(0.11)
    assert accuracy_drop([0.6, 0.7, 0.87]) == 0.0  # best at the last group: nothing lost


def test_missing_near_data_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSFERLAB_DATA", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="hymenoptera") as refused:
        lab_data(hierarchy.LAB)
    assert "\n" not in str(refused.value) and "TRANSFERLAB_DATA" in str(refused.value)


def test_the_near_target_is_the_declared_data_set(tmp_path):
    (tmp_path / "hymenoptera").mkdir()
    ctx = LabContext(out=tmp_path / "out", quick=True, seeds=[0, 1], data=lab_data(hierarchy.LAB, tmp_path))
    assert hierarchy._data(ctx, "near")[0] == str(tmp_path / "hymenoptera")
    assert hierarchy._data(ctx, "distant")[0] == "digits"
