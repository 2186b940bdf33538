"""The real data sets for the benchmark scripts: $TRANSFERLAB_DATA/NAME (docs/data.md), found by
transferlab.data.shared_dataset, or the script exits with one line naming the setting.

    from _data import dataset   # a script run as `python benchmarks/NAME.py` has benchmarks/ on sys.path
    cifar = dataset("cifar10")
"""
from __future__ import annotations

import sys
from pathlib import Path

from transferlab.data import shared_dataset
from transferlab.errors import ConfigError


def dataset(name: str, flag: str | None = None) -> Path:
    """$TRANSFERLAB_DATA/NAME; `flag`: the script's own option that gives the folder instead (named in the error)."""
    script = f"benchmarks/{Path(sys.argv[0]).name}"
    try:
        return shared_dataset(name, reader=script + (f" (without {flag})" if flag else ""), option=None)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
