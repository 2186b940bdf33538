"""Every lab, in the order of the chapter."""
from __future__ import annotations

from transferlab.errors import ConfigError
from transferlab.labs import overfitting
from transferlab.labs.base import Lab

LABS: list[Lab] = [overfitting.LAB]


def get_lab(name: str) -> Lab:
    for lab in LABS:
        if lab.name == name:
            return lab
    raise ConfigError(f"unknown lab {name!r}: choose one of {', '.join(l.name for l in LABS)}, or all "
                      f"(transferlab lab list)")
