"""What commands print: tables of strings, JSON, numbers with a `-` for missing. Used by the command line and
by the command functions diagnostics declare beside their computation (transferlab.diagnostics.registry)."""
from __future__ import annotations

import json


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def print_table(rows: list[list[str]]) -> None:
    """Rows of strings as left-aligned columns (the first row is the header); control characters escaped (a class
    or run named with ESC[2J would clear the terminal)."""
    from transferlab.units import escape_control

    rows = [[escape_control(str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def format_number(x, fmt=".4f") -> str:
    """A table cell: `-` for a missing value."""
    return "-" if x is None else format(x, fmt)
