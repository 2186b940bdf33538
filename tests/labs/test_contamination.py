"""Lab `contamination`: the digits folders it writes (splits, the leaked copies and their ids) and that the
project's check finds the leaked copies in them."""
from __future__ import annotations

import numpy as np
import pytest

from transferlab.labs.contamination import KINDS, leaked_copy, pick_leak, split_digits, write_folder

SIZES = {"train": 60, "val": 20, "test": 40, "leak": 12, "epochs": 1}


def test_splits_are_disjoint_and_fixed():
    a, b = split_digits(SIZES), split_digits(SIZES)
    assert {k: len(v) for k, v in a.items()} == {"train": 60, "val": 20, "test": 40}
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not (set(a["train"]) & set(a["test"]) or set(a["val"]) & set(a["test"]) or set(a["train"]) & set(a["val"]))


def test_leaked_copies_are_light_alterations():
    image = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    assert np.array_equal(leaked_copy(image, 0), image)
    assert np.array_equal(leaked_copy(image, 1), np.round(image * 0.8).astype(np.uint8))
    assert leaked_copy(image, 2).shape == (16, 16)


def test_leak_depends_on_the_seed_and_comes_from_test():
    test = split_digits(SIZES)["test"]
    leak0, leak1 = pick_leak(test, 12, 0), pick_leak(test, 12, 1)
    assert {r for r, _ in leak0} <= set(test.tolist()) and len({r for r, _ in leak0}) == 12
    assert leak0 == pick_leak(test, 12, 0) and leak0 != leak1
    assert [k for _, k in leak0].count(0) == 12 // len(KINDS)


def test_the_check_finds_the_exact_copies_in_the_written_folder(tmp_path):
    from transferlab.contamination.check import CheckOptions, check_contamination
    from transferlab.contamination.inputs import read_split
    from transferlab.contamination.subsets import read_contamination

    splits = split_digits(SIZES)
    leaked = write_folder(tmp_path, splits, pick_leak(splits["test"], 12, 0))
    assert len(list((tmp_path / "train").rglob("leak_*.png"))) == 12
    target = read_split(tmp_path, "test")
    assert set(leaked) <= set(target.ids)  # the lab's ids are the check's ids
    check_contamination(read_split(tmp_path, "train"), target, CheckOptions(methods=["exact"], calibrate=0, show=0),
                        tmp_path / "check", str(tmp_path), str(tmp_path))
    dirty = read_contamination(tmp_path / "check").dirty
    exact = {tid for tid, kind in leaked.items() if kind == "as_is"}
    assert exact <= dirty
    assert not {tid for tid, kind in leaked.items() if kind == "dimmed"} & dirty  # not bit-identical


if __name__ == "__main__":
    pytest.main([__file__])
