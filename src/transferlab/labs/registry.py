"""Every lab, in the order of the chapter."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from transferlab.errors import ConfigError
from transferlab.labs import batchnorm, bottleneck, contamination, discriminative, forgetting, freezing, frequency, \
    hierarchy, l2sp, overfitting, peft, pretraining
from transferlab.labs.base import Lab

LABS: list[Lab] = [hierarchy.LAB, frequency.LAB, overfitting.LAB, forgetting.LAB, freezing.LAB, discriminative.LAB,
                   l2sp.LAB, pretraining.LAB, batchnorm.LAB, peft.LAB, bottleneck.LAB, contamination.LAB]


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
