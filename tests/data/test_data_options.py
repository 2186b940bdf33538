"""DataOptions: defaults, help texts and validation; SkipLog: deduplication and warnings."""
import dataclasses
import logging

import pytest

from transferlab.data import DataError, DataOptions, SkipLog


def test_every_field_has_a_default_and_a_help_text():
    for f in dataclasses.fields(DataOptions):
        assert f.default is not dataclasses.MISSING, f.name
        assert f.metadata.get("help", "").strip(), f.name
    assert DataOptions().val_fraction == 0.2


@pytest.mark.parametrize("kwargs", [
    {"val_fraction": 0}, {"val_fraction": 1}, {"val_fraction": 1.5}, {"val_fraction": -0.1},
    {"max_train": 0}, {"max_train": 2.5}, {"image_size": 7}, {"image_size": 1025}, {"image_size": 30_000},
    {"max_length": 3},
    {"no_header": True, "text_column": "text"}, {"no_header": True, "label_column": "-1"},
    {"text_column": "x", "label_column": "x"},
])
def test_invalid_options_raise_data_error(kwargs):
    with pytest.raises(DataError):
        DataOptions(**kwargs)


def test_the_largest_image_size_is_accepted_and_the_next_names_the_limit():
    assert DataOptions(image_size=1024).image_size == 1024
    with pytest.raises(DataError, match="--image-size must be at most 1024, got 1025"):
        DataOptions(image_size=1025)


def test_valid_options_are_kept():
    opts = DataOptions(val_fraction=0.5, max_train=1, image_size=8, max_length=4, no_header=True,
                       text_column="1", label_column="0")
    assert (opts.max_train, opts.image_size, opts.text_column) == (1, 8, "1")


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_skiplog_deduplicates_and_warns_once(caplog):
    log = SkipLog()
    with caplog.at_level(logging.WARNING, logger="transferlab.data"):
        assert log.add("a.jpg", "truncated")
        assert not log.add("a.jpg", "truncated")  # second epoch: same file
        log.add("b.jpg", "empty file")
    assert log.count == 2 == len(log)
    assert log.to_list() == [{"path": "a.jpg", "reason": "truncated"}, {"path": "b.jpg", "reason": "empty file"}]
    assert log.items == log.to_list()
    assert "a.jpg" in log
    assert sum("a.jpg" in r.getMessage() for r in caplog.records) == 1
