"""Every lab, in the order of the chapter."""
from __future__ import annotations

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
