"""Where the real data sets (hymenoptera, sst2, sst2_clean, cifar10) are found: one setting, never the package's
own location (docs/data.md says where to get them and how each is laid out).

    data_root("--data-root value or None")      # that folder, else $TRANSFERLAB_DATA, else None
    shared_dataset("hymenoptera", reader="lab `hierarchy`")   # ROOT/hymenoptera, or one ConfigError line
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from transferlab.errors import ConfigError

DATA_ENV = "TRANSFERLAB_DATA"
DATA_DOCS = "docs/data.md"


def data_root(explicit: str | os.PathLike | None = None) -> Path | None:
    """The folder that holds the data sets: `explicit` (a --data-root option) when given, else $TRANSFERLAB_DATA
    when set and not empty, else None. Not checked here: `shared_datasets` says what is missing."""
    if explicit is not None and str(explicit).strip():
        return Path(explicit).expanduser()
    value = os.environ.get(DATA_ENV, "").strip()
    return Path(value).expanduser() if value else None


def shared_datasets(names: Iterable[str], explicit: str | os.PathLike | None = None, reader: str = "this",
                    option: str | None = "--data-root") -> dict[str, Path]:
    """{name: ROOT/name} for every name, ROOT from `data_root(explicit)`. When the root is unset or lacks one of
    them, one ConfigError line that names the setting (and `option`, the caller's own flag, when it has one):
    `reader` says who reads them ("lab `peft`")."""
    names = list(dict.fromkeys(names))
    if not names:
        return {}
    root = data_root(explicit)
    missing = names if root is None else [n for n in names if not (root / n).is_dir()]
    if missing:
        raise ConfigError(_missing_message(missing, root, explicit is not None and root is not None, reader, option))
    return {n: root / n for n in names}


def shared_dataset(name: str, explicit: str | os.PathLike | None = None, reader: str = "this",
                   option: str | None = "--data-root") -> Path:
    """ROOT/NAME (see `shared_datasets`)."""
    return shared_datasets([name], explicit, reader, option)[name]


def _missing_message(missing: list[str], root: Path | None, from_option: bool, reader: str,
                     option: str | None) -> str:
    sets = _and(missing)
    folders = _and([f"{n}/" for n in missing])
    noun = "data set" if len(missing) == 1 else "data sets"
    where = f"see {DATA_DOCS} for where to get {'it' if len(missing) == 1 else 'them'}"
    either = f"{DATA_ENV} (or {option})" if option else DATA_ENV
    if root is None:
        return f"{reader} reads the {noun} {sets}: set {either} to the folder that holds {folders} ({where})"
    setting = f"{option} {root}" if from_option else f"{DATA_ENV}={root}"
    fix = f"point {option} at" if from_option else f"set {either} to"
    return f"{reader} reads the {noun} {sets}, not found in {setting} (no {_and([str(root / n) for n in missing])}" \
           f"): {fix} the folder that holds {folders} ({where})"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
