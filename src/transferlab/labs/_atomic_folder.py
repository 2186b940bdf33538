"""A data folder a lab writes, whole or not at all.

The files go into a temporary sibling `.NAME.<random>.transferlab-tmp/`, the completion marker last, and the
folder is then renamed to NAME: a kill leaves NAME as it was (absent, or complete) plus at worst a temporary
folder, which the next write deletes (only folders with that name pattern: never anything of the user's).

A NAME without its marker (a folder half-written by a version that wrote in place) is never reused: the files the
lab writes there (`owned` says which, by their relative path) are deleted and the folder is written again; any
other file in it is the user's, and the write is refused with one line.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from transferlab.errors import ConfigError
from transferlab.safe_io import TEMP_SUFFIX, atomic_write_text, temp_folder_beside

logger = logging.getLogger(__name__)


def is_complete(out: Path, marker: str, marker_text: str) -> bool:
    file = out / marker
    return file.is_file() and file.read_text(encoding="utf-8") == marker_text


def write_atomically(out: str | Path, marker: str, marker_text: str, write: Callable[[Path], None],
                     owned: Callable[[tuple[str, ...]], bool]) -> Path:
    """Make OUT by `write(temporary folder)` then a rename, unless OUT/MARKER already holds `marker_text`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in temp_folders(out):  # left by a kill: ours by name
        shutil.rmtree(stale)
        logger.info("removed %s, left by an interrupted write", stale)
    if is_complete(out, marker, marker_text):
        return out
    temp = temp_folder_beside(out)
    try:
        write(temp)
        atomic_write_text(temp / marker, marker_text)
        _clear(out, marker, owned)
        os.replace(temp, out)  # onto a missing or empty folder: atomic
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return out


def temp_folders(out: Path) -> list[Path]:
    """The temporary folders `write_atomically` makes for OUT (`.OUT.<random>.transferlab-tmp`)."""
    if not out.parent.is_dir():
        return []
    return sorted(p for p in out.parent.glob(f".{out.name}.*{TEMP_SUFFIX}") if p.is_dir() and not p.is_symlink())


def _clear(out: Path, marker: str, owned: Callable[[tuple[str, ...]], bool]) -> None:
    """Empty OUT of what the lab writes (a complete folder of other settings, or a half-written one), so that the
    new folder can be renamed onto it; refuse when it holds anything else."""
    if not out.exists():
        return
    if out.is_symlink() or not out.is_dir():
        raise ConfigError(f"{out} is not a folder transferlab wrote; move it away or choose another --out")
    files = [p for p in out.rglob("*") if not p.is_dir() or p.is_symlink()]
    foreign = [p for p in files if p.is_symlink() or not (owned(p.relative_to(out).parts)
                                                          or p.relative_to(out).parts == (marker,))]
    if foreign:
        names = ", ".join(str(p.relative_to(out)) for p in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise ConfigError(f"{out} holds files that transferlab did not write ({names}); move them away or choose "
                          f"another --out (nothing was changed)")
    for p in files:
        p.unlink()
    for folder in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        folder.rmdir()
    out.rmdir()
