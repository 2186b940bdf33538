"""Lab `discriminative`: how depth groups are split into early and late thirds, and the spread measures."""
from __future__ import annotations

import math

import pytest

from transferlab.labs.discriminative import log_ratio, third_means, thirds


def test_thirds_of_efficientnet_lite0_backbone():
    assert thirds(9) == ([0, 1, 2], [6, 7, 8])  # stem, blocks.0, blocks.1 | blocks.5, blocks.6, final_conv
    assert thirds(4) == ([0], [3])
    assert thirds(2) == ([0], [1])  # at least one group each side


def test_third_means_and_log_ratio():
    values = [1e-6, 2e-6, 3e-6, 1.0, 1.0, 1.0, 1e-3, 2e-3, 3e-3]
    early, late = third_means(values)
    assert early == pytest.approx(2e-6) and late == pytest.approx(2e-3)
    assert log_ratio(values) == pytest.approx(3.0)


def test_log_ratio_is_nan_when_a_third_did_not_move():
    # 1 - CKA can round to 0 or below for groups whose learning rate is ~0: the ratio is then undefined
    assert math.isnan(log_ratio([0.0, -1e-9, 0.0, 0.5, 0.5, 0.5]))
