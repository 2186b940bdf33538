"""Every lab, in the order of the chapter. A lab is one module of this package defining `LAB = Lab(...)`
(with its `chapter` place): the package imports each of its public modules and collects their LABs, so adding
a lab is adding its file."""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from contextlib import contextmanager

from transferlab.errors import ConfigError
from transferlab.labs.base import Lab


_MACHINERY = frozenset({"base", "page", "registry", "runner", "verdict"})  # what runs labs; no LAB in them


def _discover() -> list[Lab]:
    import transferlab.labs as package

    labs = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name in _MACHINERY:
            continue
        lab = getattr(importlib.import_module(f"{package.__name__}.{info.name}"), "LAB", None)
        if isinstance(lab, Lab):
            labs.append(lab)
    return sorted(labs, key=lambda lab: (lab.chapter, lab.name))


LABS: list[Lab] = []  # filled in place (modules that imported the list see the same one)
LABS[:] = _discover()


def get_lab(name: str) -> Lab:
    for lab in LABS:
        if lab.name == name:
            return lab
    raise ConfigError(f"unknown lab {name!r}: choose one of {', '.join(l.name for l in LABS)}, or all "
                      f"(transferlab lab list)")


@contextmanager
def registered(labs: list[Lab]) -> Iterator[list[Lab]]:
    """LABS is exactly `labs` inside the block, and what it was before after it (a test's toy lab: `lab run all`
    then runs it alone; `[*LABS, toy]` adds one). LABS is changed in place, so every module that imported it
    sees the same list."""
    names = [lab.name for lab in labs]
    if len(set(names)) != len(names):
        raise ValueError(f"two labs with one name: {names}")
    saved = LABS[:]
    LABS[:] = labs
    try:
        yield LABS
    finally:
        LABS[:] = saved
