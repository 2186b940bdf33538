"""Unsupervised domain adaptation: strategies that also learn from unlabelled target data (`--target-data`).

One module per method, each registered with `@register_strategy` (dann, cdan, mcc); `_common.py` holds what they
share: the gradient-reversal layer and its schedule, the domain discriminator, and the base class that reads
the source and target features of a step. They are regularisers: composed with a selection strategy
(`lp_ft+dann`), they train that strategy's parameters plus their own (a discriminator).
"""
from transferlab.strategies._discover import import_submodules

import_submodules(__name__, __path__)
