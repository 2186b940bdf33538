"""Warnings about text labels that are probably mistakes.

Labels are kept exactly as written: merging '1' and '1.0', or dropping a row that looks like a header, would
change a data set without the user knowing, which is worse than a class too many. So these only warn, naming
the file, the line and the class, and say what to change.
"""
from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._text_reader import TextRows

logger = logging.getLogger(__name__)

# Words a header row's label or text cell would hold (the names the reader detects, and common others).
HEADER_WORDS = frozenset({"label", "labels", "class", "category", "target", "sentiment", "y",
                          "sentence", "text", "review", "content"})
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SHOWN = 5  # warnings of one kind per file, before one summary line


def number_value(label: str) -> Decimal | None:
    """The label's value when it is written as a decimal number ('01', '1.0', '1e0'), else None.

    Decimal, not float: '12345678901234567890' and '12345678901234567891' are different numbers.
    """
    if len(label) > 100 or not _NUMBER.fullmatch(label):
        return None
    try:
        return Decimal(label)
    except InvalidOperation:  # an exponent beyond what Decimal holds
        return None


def numeric_twins(labels) -> list[list[str]]:
    """Groups of distinct labels that are the same number written differently: [['01', '1', '1.0'], ...]."""
    groups: dict[Decimal, set[str]] = defaultdict(set)
    for label in labels:
        value = number_value(label)
        if value is not None:
            groups[value].add(label)
    return [sorted(names) for names in groups.values() if len(names) > 1]


def looks_like_header(rows: TextRows, counts: Counter) -> bool:
    """Whether the first row of a file read with no_header is probably its header: its label occurs nowhere
    else, and it is a column name ('label'), its text is one ('sentence'), or every other label is a number."""
    if not rows.labels or counts[rows.labels[0]] != 1 or len(counts) < 2:
        return False
    label, text = rows.labels[0], rows.texts[0]
    if label.lower() in HEADER_WORDS or text.lower() in HEADER_WORDS:
        return True
    return number_value(label) is None and all(number_value(other) is not None for other in counts if other != label)


def warn_about_labels(rows: TextRows, no_header: bool) -> None:
    """Log a warning for a header row read as data, classes with a single example, and numeric twins."""
    counts = Counter(rows.labels)
    header = no_header and looks_like_header(rows, counts)
    if header:
        logger.warning("%s:%d: with --no-header, the first row (label %r, text %r) looks like a header row; it is "
                       "read as a class with a single example: remove the row, or drop --no-header",
                       rows.path, rows.lines[0], rows.labels[0], rows.texts[0][:40])
    singles = [i for i, label in enumerate(rows.labels) if counts[label] == 1 and not (header and i == 0)]
    for i in singles[:_SHOWN]:
        logger.warning("%s:%d: class %r has a single example, so it cannot be in both training and validation; "
                       "check the label", rows.path, rows.lines[i], rows.labels[i])
    if len(singles) > _SHOWN:
        logger.warning("%s: %d more classes have a single example", rows.path, len(singles) - _SHOWN)
    for names in numeric_twins(counts)[:_SHOWN]:
        logger.warning("%s: labels %s are the same number written differently and are read as %d different "
                       "classes; if they mean one class, write it one way", rows.path, _listed(names), len(names))


def unknown_label_hint(rows: TextRows, unknown: list[str], known, no_header: bool) -> str:
    """Why labels of a validation or test file may be missing from training (for the DataError), or ''."""
    hints = []
    if no_header and rows.labels and rows.labels[0] in unknown and looks_like_header(rows, Counter(rows.labels)):
        hints.append(f"line {rows.lines[0]} looks like a header row: remove it, or drop --no-header")
    by_value = {number_value(k): k for k in known if number_value(k) is not None}
    twins = [(u, by_value[number_value(u)]) for u in unknown if number_value(u) in by_value]
    hints += [f"{u!r} is training's {k!r} written differently" for u, k in twins[:3]]
    return f" ({'; '.join(hints)})" if hints else ""


def _listed(names: list[str]) -> str:
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"
