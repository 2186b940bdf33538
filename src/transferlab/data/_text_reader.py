"""Reading labelled text rows from .tsv, .csv and .jsonl files.

Bad rows (empty text, missing label, wrong field count, invalid JSON, a field above csv's size limit of
131,072 characters) are skipped and recorded in the SkipLog as "file:line"; a file that cannot be used at all
raises DataError.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import DataError, SkipLog
from ._options import listed
from ._split import sort_labels

if TYPE_CHECKING:
    from ._options import DataOptions

logger = logging.getLogger(__name__)

TEXT_EXTENSIONS = (".tsv", ".csv", ".jsonl")
TEXT_NAMES = ("sentence", "text")  # detected text columns, in order of preference
LABEL_NAME = "label"
_WARN_ROWS = 5  # skipped rows warned about one by one per file; the rest go to one summary line
_MISSING = object()
_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass
class TextRows:
    """The usable rows of one file, in file order."""

    path: Path
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # where each row starts in the file (1-based)
    row_ids: list[int] = field(default_factory=list)  # 0-based data-row index in the file (header not counted,
    # skipped and left-out rows counted): the id that names a row whatever the options (contamination matches)
    skipped: int = 0
    left_out: set[str] = field(default_factory=set)  # labels of the rows that --classes left out


@dataclass
class _Record:
    first_line: int  # 1-based physical lines; a quoted CSV field may span several
    last_line: int
    value: Any  # list[str] for CSV/TSV; the decoded JSON value for JSONL; _Rejected when unparsable


def _decode(path: Path) -> str:
    """UTF-8 (a leading BOM dropped, since it would hide the first column name); undecodable bytes
    become U+FFFD and are counted, so a file in another encoding is noticed, not fatal."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    text = raw.decode("utf-8-sig", errors="replace")
    replaced = text.count("\ufffd") - raw.count("\ufffd".encode())
    if replaced > 0:
        logger.warning("%s: %d byte sequence(s) are not valid UTF-8 and were replaced with U+FFFD; "
                       "save the file as UTF-8 to keep those characters", path, replaced)
    return text


class _Lines:
    """The physical lines of a text as csv reads them (newline="": \n, \r\n or \r, kept), counted, with a way
    to jump ahead: after a row csv cannot parse, reading goes on where that row ends. Lines are sliced from
    the text (an io.StringIO would hold another copy, at up to 4 bytes a character)."""

    def __init__(self, text: str) -> None:
        self._text = text
        self.number = 0  # lines handed out so far
        self.offset = 0  # characters handed out so far

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.offset >= len(self._text):
            raise StopIteration
        match = _LINE_END.search(self._text, self.offset)
        end = match.end() if match else len(self._text)
        line = self._text[self.offset:end]
        self.number += 1
        self.offset = end
        return line

    def skip_to(self, offset: int) -> None:
        while self.offset < offset and next(self, None) is not None:
            pass


def _record_end(text: str, start: int, delimiter: str) -> int:
    """Where the CSV record starting at ``start`` ends (past its line break), by the csv module's default
    quoting: a field that opens with a quote runs to its closing quote, line breaks included ("" is a quote
    inside it); anywhere else a quote is an ordinary character."""
    special = re.compile(f"[{re.escape(delimiter)}\r\n]")
    i, n = start, len(text)
    while i < n:
        if text[i] == '"':  # a quoted field: find the quote that closes it
            j = i + 1
            while (j := text.find('"', j)) >= 0 and text.startswith('""', j):
                j += 2
            if j < 0:
                return n
            i = j + 1
        match = special.search(text, i)
        if match is None:
            return n
        if match.group() == delimiter:
            i = match.end()
            continue
        return match.end() + (1 if text.startswith("\r\n", match.start()) else 0)
    return n


def _csv_records(text: str, delimiter: str) -> Iterator[_Record]:
    lines = _Lines(text)
    reader = csv.reader(lines, delimiter=delimiter)
    while True:
        start, first = lines.offset, lines.number + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # a field above csv's size limit (131,072 characters): this row only
            lines.skip_to(_record_end(text, start, delimiter))
            yield _Record(first, lines.number, _Rejected(f"cannot parse the row ({exc})"))
            continue
        if all(not cell.strip() for cell in row):
            continue  # blank line
        yield _Record(first, lines.number, row)


class _Rejected:
    """Why a value cannot be used (kept in place of the value so the row can be skipped with it)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _jsonl_records(text: str) -> Iterator[_Record]:
    # split("\n"), not splitlines(): JSON strings may hold a raw U+2028, which splitlines() breaks on.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested arrays
            value = _Rejected(f"invalid JSON ({str(exc)[:80]})")
        yield _Record(number, number, value)


def _match(names: list[str], wanted: str) -> str | None:
    if wanted in names:
        return wanted
    folded = [n for n in names if n.strip().lower() == wanted.strip().lower()]
    return folded[0] if folded else None


def _resolve(path: Path, names: list[str], options: DataOptions) -> tuple[str, str]:
    """Pick the text and label column names from a header (or the first JSON object's keys)."""
    found = ", ".join(repr(n) for n in names) or "none"
    hint = "; if the file has no header row, use --no-header"
    if options.text_column is not None:
        text = _match(names, options.text_column)
        if text is None:
            raise DataError(f"{path}: no text column {options.text_column!r} (--text-column); columns found: "
                            f"{found}{hint}")
    else:
        text = next((m for m in (_match(names, n) for n in TEXT_NAMES) if m is not None), None)
        if text is None:
            raise DataError(f"{path}: no text column ('sentence' or 'text'); columns found: {found}; "
                            f"name it with --text-column{hint}")
    label = _match(names, options.label_column or LABEL_NAME)
    if label is None:
        raise DataError(f"{path}: no label column {options.label_column or LABEL_NAME!r}; columns found: {found}; "
                        f"name it with --label-column{hint}")
    if label == text:
        raise DataError(f"{path}: the text and label columns are both {text!r}; name two different columns with "
                        "--text-column and --label-column")
    return text, label


def _indices(path: Path, options: DataOptions, width: int | None) -> tuple[int, int]:
    text = int(options.text_column or 0)
    label = int(options.label_column) if options.label_column is not None else 1
    if text == label:
        raise DataError(f"{path}: text and label are both column {text}; give two different column indices with "
                        "--text-column and --label-column (defaults 0 and 1)")
    if width is not None and max(text, label) >= width:
        flag = "--label-column" if label >= width else "--text-column"
        default = "" if getattr(options, flag[2:].replace("-", "_")) is not None else ", the default"
        raise DataError(f"{path}: column index {max(text, label)} is out of range ({flag}{default}): the first row "
                        f"has {width} column(s) (indices start at 0)")
    return text, label


def _label(value: Any) -> str | None | _Rejected:
    """A label as a class-name string; None when missing; _Rejected for unusable types."""
    if value is _MISSING or value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool):  # JSON true/false: ambiguous as class names
        return _Rejected("label must be a string or an integer, got a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))  # 1.0 -> "1", as JSON writers often emit integers as floats
    return _Rejected(f"label must be a string or an integer, got {type(value).__name__} {str(value)[:40]}")


def _get(record: Any, key: Any) -> Any:
    if isinstance(record, dict):
        return record.get(key, _MISSING)
    return record[key] if key < len(record) else _MISSING


def _shape_problem(record: _Record, jsonl: bool, no_header: bool, width: int | None) -> str | None:
    """Why a record does not have the shape of a row (None when it does)."""
    value = record.value
    if isinstance(value, _Rejected):
        return value.reason
    if jsonl:
        if no_header and not isinstance(value, list):
            return "expected a JSON array (--no-header)"
        if not no_header and not isinstance(value, dict):
            return "expected a JSON object"
        return None
    if len(value) != width:
        span = ("" if record.first_line == record.last_line else
                f" (the row spans lines {record.first_line}-{record.last_line}: an unclosed quote?)")
        return f"expected {width} fields, found {len(value)}{span}"
    return None


def _parse_row(value: Any, text_key: Any, label_key: Any) -> tuple[str, str] | str:
    """(text, label) of a row, or why the row is skipped."""
    raw = _get(value, text_key)
    if raw is _MISSING or raw is None:
        return "missing text"
    if not isinstance(raw, str):
        return f"text must be a string, got {type(raw).__name__}"
    text = raw.strip()
    if not text:
        return "empty text"
    label = _label(_get(value, label_key))
    if label is None:
        return "missing label"
    if isinstance(label, _Rejected):
        return label.reason
    return text, label


def read_text_file(path: Path, options: DataOptions, skipped: SkipLog) -> TextRows:
    """Usable (text, label) rows of one .tsv/.csv/.jsonl file; bad rows go to ``skipped``.

    Surrounding whitespace is removed from texts and labels. CSV/TSV columns come from the header
    row (or, with no_header, from indices); JSONL columns from the first usable object's keys.
    With ``options.classes``, rows of other labels are left out as if the file did not hold them (a bad row
    whose label can be read and is not selected is not counted as skipped either).
    """
    keep = options.selected_classes()
    keep = None if keep is None else set(keep)
    suffix = path.suffix.lower()
    if suffix not in TEXT_EXTENSIONS:
        raise DataError(f"{path}: unknown file format {suffix or '(no extension)'}; use .tsv, .csv or .jsonl")
    jsonl = suffix == ".jsonl"
    text = _decode(path)
    records = _jsonl_records(text) if jsonl else _csv_records(text, "\t" if suffix == ".tsv" else ",")
    rows = TextRows(path)
    columns: tuple[Any, Any] | None = None  # (text key, label key): column indices, or JSON keys
    width: int | None = None  # the number of fields every CSV/TSV row must have
    seen = False
    data_row = -1  # 0-based index of the current data row
    for record in records:
        seen = True
        if columns is None and not jsonl and isinstance(record.value, _Rejected) and not options.no_header:
            raise DataError(f"{path}:{record.first_line}: cannot read the header row: {record.value.reason}")
        if columns is None and not jsonl and not isinstance(record.value, _Rejected):
            width = len(record.value)
            if options.no_header:
                columns = _indices(path, options, width)
            else:
                header = [name.strip() for name in record.value]
                columns = tuple(header.index(name) for name in _resolve(path, header, options))
                continue
        data_row += 1
        problem = _shape_problem(record, jsonl, options.no_header, width)
        if problem is None:
            if columns is None:  # JSONL: the first usable row fixes the columns
                columns = (_indices(path, options, None) if options.no_header
                           else _resolve(path, [str(key) for key in record.value], options))
            parsed = _parse_row(record.value, *columns)
            label = parsed[1] if isinstance(parsed, tuple) else _label(_get(record.value, columns[1]))
            if keep is not None and isinstance(label, str) and label not in keep:
                rows.left_out.add(label)
                continue
            if isinstance(parsed, tuple):
                rows.texts.append(parsed[0])
                rows.labels.append(parsed[1])
                rows.lines.append(record.first_line)
                rows.row_ids.append(data_row)
                continue
            problem = parsed
        rows.skipped += 1
        skipped.add(f"{path}:{record.first_line}", problem, log=rows.skipped <= _WARN_ROWS)

    if not seen:
        raise DataError(f"{path}: the file holds no rows")
    if rows.skipped:
        logger.warning("%s: skipped %d row(s); %d usable (see the skip log for each line)",
                       path, rows.skipped, len(rows.texts))
    if not rows.texts and rows.left_out:
        raise DataError(f"{path} has no rows of the classes --classes selects ({listed(sort_labels(keep))}); "
                        f"its labels are {listed(sort_labels(rows.left_out))}")
    if not rows.texts:
        reason = f"; all {rows.skipped} row(s) were skipped" if rows.skipped else ""
        raise DataError(f"{path}: no usable rows (text and label){reason}; check the columns and the delimiter")
    return rows
