"""Fine-tuning strategies: one module each, registered with `@register_strategy`, composable with '+'.

Every public module of this package (and of `peft_methods`) is imported here, so a strategy registers by
being a file of the package: no import list to edit.
"""
from transferlab.strategies.base import SpaceContext, Strategy, StrategyContext, Tunable
from transferlab.strategies.compose import ComposedStrategy
from transferlab.strategies.registry import describe, list_strategies, parse_strategy, register_strategy
from transferlab.strategies._discover import import_submodules

__all__ = ["SpaceContext", "Strategy", "StrategyContext", "Tunable", "ComposedStrategy", "describe", "list_strategies", "parse_strategy",
           "register_strategy"]

# The contract and the registry hold no strategies; every other public module registers its own.
import_submodules(__name__, __path__, skip=frozenset({"base", "compose", "registry"}))
