"""Stratified, seeded splits and subsamples, and the one rule for ordering class names."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from ._errors import DataError

# Folder and file names that mark a validation split; the first that exists is used.
VAL_NAMES = ("val", "valid", "validation", "dev")
# Stream tags keep the validation split and the training subsample independent for one seed.
_SPLIT_STREAM, _SUBSAMPLE_STREAM, _TEST_STREAM = 0, 1, 2


def sort_labels(labels: Iterable[str]) -> list[str]:
    """Distinct labels in class-index order: numeric when all are integers ("2" < "10"), else text."""
    distinct = set(labels)
    as_int = {label: _as_int(label) for label in distinct}
    if distinct and all(v is not None for v in as_int.values()):
        return sorted(distinct, key=lambda label: (as_int[label], label))
    return sorted(distinct)


def _as_int(label: str) -> int | None:
    try:
        return int(label.strip())
    except ValueError:  # also raised for labels with more digits than Python converts
        return None


def _by_class(targets: Sequence[int]) -> dict[int, np.ndarray]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, t in enumerate(targets):
        groups[int(t)].append(i)
    return {c: np.asarray(groups[c]) for c in sorted(groups)}


def stratified_split(targets: Sequence[int], fraction: float, seed: int,
                     stream: int = _SPLIT_STREAM) -> tuple[list[int], list[int]]:
    """Split indices into (kept, held_out), holding out about ``fraction`` of each class.

    Every class with at least 2 examples puts at least one in each part, so validation sees
    every class it can; a class with a single example stays in the kept part.
    Each class draws from its own seeded stream, so adding a class leaves the others' splits alone.

    Written by hand rather than with scikit-learn's ``train_test_split(stratify=...)``: that refuses any data set
    with a one-example class ("The least populated class in y has only 1 member"), which small image folders
    often have, and it allocates hold-out counts across classes jointly, so one class's examples change the
    others' splits.
    """
    kept: list[int] = []
    held: list[int] = []
    for c, idx in _by_class(targets).items():
        n = len(idx)
        k = min(max(round(fraction * n), 1), n - 1) if n >= 2 else 0
        order = np.random.default_rng([seed, stream, c]).permutation(n)
        held.extend(idx[order[:k]].tolist())
        kept.extend(idx[order[k:]].tolist())
    return sorted(kept), sorted(held)


def holdout_split(targets: Sequence[int], fraction: float, seed: int, source: object) -> tuple[list[int], list[int]]:
    """``stratified_split`` for a data set without a validation split; an empty hold-out is an error."""
    kept, held = stratified_split(targets, fraction, seed)
    if not held:
        raise DataError(f"{source}: too few examples to hold out a validation split (a class needs at least 2); "
                        "add examples or a validation split")
    return kept, held


def test_holdout(targets: Sequence[int], fraction: float, seed: int, source: object) -> tuple[list[int], list[int]]:
    """(kept, test): ``stratified_split`` on a stream of its own, for ``--test-fraction`` (a data set without a
    test split). Carved first, so neither the validation split nor ``--max-train`` can select on it."""
    kept, held = stratified_split(targets, fraction, seed, stream=_TEST_STREAM)
    if not held:
        raise DataError(f"{source}: too few examples to hold out a test split (a class needs at least 2); "
                        "drop --test-fraction or add examples")
    return kept, held


def stratified_subset(targets: Sequence[int], n: int, seed: int, option: str = "--max-train") -> list[int]:
    """Indices of a seeded subsample of size ``n`` with class proportions kept (largest remainder),
    at least one example per class. All indices when ``n >= len(targets)``.

    ``option`` is the flag that gave ``n`` (``--max-train``, ``--max-val``), named in the error message.
    """
    total = len(targets)
    if n >= total:
        return list(range(total))
    groups = _by_class(targets)
    counts = np.array([len(idx) for idx in groups.values()])
    if n < len(counts):
        raise DataError(f"{option} {n} is smaller than the number of classes ({len(counts)}); "
                        f"use at least {len(counts)} so that every class keeps an example")
    exact = n * counts / total
    quota = np.minimum(np.maximum(np.floor(exact).astype(int), 1), counts)
    # Fix the sum to n one example at a time; at most one step per class either way.
    while quota.sum() < n:
        room = np.where(quota < counts, exact - quota, -np.inf)
        quota[int(np.argmax(room))] += 1
    while quota.sum() > n:
        excess = np.where(quota > 1, quota - exact, -np.inf)
        quota[int(np.argmax(excess))] -= 1
    chosen: list[int] = []
    for (c, idx), q in zip(groups.items(), quota):
        rng = np.random.default_rng([seed, _SUBSAMPLE_STREAM, c])
        chosen.extend(rng.choice(idx, size=int(q), replace=False).tolist())
    return sorted(chosen)
