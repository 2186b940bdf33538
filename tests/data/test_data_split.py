"""Stratified, seeded splits and subsamples, and class-name ordering."""
from collections import Counter

import pytest

from transferlab.data import DataError
from transferlab.data._split import sort_labels, stratified_split, stratified_subset

TARGETS = [0] * 50 + [1] * 30 + [2] * 20 + [3]  # class 3 has a single example


def test_split_holds_out_the_fraction_of_each_class():
    kept, held = stratified_split(TARGETS, 0.2, seed=0)
    assert sorted(kept + held) == list(range(len(TARGETS)))
    held_counts = Counter(TARGETS[i] for i in held)
    assert held_counts == {0: 10, 1: 6, 2: 4}  # the singleton class stays in training
    assert 3 in {TARGETS[i] for i in kept}


def test_split_is_deterministic_per_seed():
    assert stratified_split(TARGETS, 0.3, seed=1) == stratified_split(TARGETS, 0.3, seed=1)
    assert stratified_split(TARGETS, 0.3, seed=1) != stratified_split(TARGETS, 0.3, seed=2)


def test_subset_keeps_class_proportions_and_size():
    chosen = stratified_subset(TARGETS, 20, seed=0)
    assert len(chosen) == 20 == len(set(chosen))
    counts = Counter(TARGETS[i] for i in chosen)
    assert counts[3] == 1  # every class keeps an example
    for c, n in {0: 50, 1: 30, 2: 20}.items():
        assert abs(counts[c] - 20 * n / len(TARGETS)) <= 1.5
    assert chosen == stratified_subset(TARGETS, 20, seed=0)
    assert chosen != stratified_subset(TARGETS, 20, seed=5)


def test_subset_at_or_above_size_keeps_all_and_below_classes_fails():
    assert stratified_subset(TARGETS, 1000, seed=0) == list(range(len(TARGETS)))
    with pytest.raises(DataError, match="number of classes"):
        stratified_subset(TARGETS, 3, seed=0)


def test_labels_sort_numerically_when_all_are_integers():
    assert sort_labels(["10", "2", "1", "0", "2"]) == ["0", "1", "2", "10"]
    assert sort_labels(["b", "a", "10", "2"]) == ["10", "2", "a", "b"]
