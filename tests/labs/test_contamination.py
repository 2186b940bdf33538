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


def test_the_labs_check_calibrates_its_thresholds_on_the_digits_and_finds_the_leak(tmp_path):
    """The lab's check (the command's defaults: thresholds from the leaked training split at fpr 0.001) on a
    small leaked folder: every leaked copy is found, hardly any other test image is flagged, dHash is disabled
    (the CIFAR-10 thresholds flag nearly every test digit: docs/contamination.md)."""
    import json

    import torch

    from transferlab.contamination.check import check_contamination
    from transferlab.contamination.inputs import read_split
    from transferlab.contamination.subsets import read_contamination
    from transferlab.labs.contamination import CHECK_FPR, FPR_CEILING, check_options, rules

    opts = check_options()
    assert opts.threshold_mode == "data" and opts.fpr == CHECK_FPR == 0.001 and opts.methods is None
    sizes = {"train": 200, "val": 0, "test": 100}
    splits = split_digits(sizes)
    leaked = write_folder(tmp_path, splits, pick_leak(splits["test"], 30, 0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the aligned scoring's many small operations: faster on one of two shared cores
    try:
        summary = check_contamination(read_split(tmp_path, "train"), read_split(tmp_path, "test"), opts,
                                      tmp_path / "check", str(tmp_path), str(tmp_path))
    finally:
        torch.set_num_threads(threads)
    dirty = read_contamination(tmp_path / "check").dirty
    assert set(leaked) <= dirty  # as they are, dimmed and rescaled: all found
    # of the 70 others (measured: 2): each method's threshold lies beyond all of 230 null scores, which bounds
    # its rate at 0.013 (95 %); the full lab's 550 bound it at 0.0055, and its ceiling is FPR_CEILING
    assert len(dirty - set(leaked)) <= 3 and FPR_CEILING == 0.02
    assert summary["thresholds"]["null"]["n"] == 230 and summary["methods"]["dhash"]["disabled"]
    assert "dhash disabled: no threshold reaches fpr 0.001" in rules(summary)
    assert json.loads((tmp_path / "check" / "summary.json").read_text())["thresholds"]["fpr"] == CHECK_FPR


if __name__ == "__main__":
    pytest.main([__file__])
