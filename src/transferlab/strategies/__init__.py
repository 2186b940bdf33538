"""Fine-tuning strategies: one module each, registered in `registry`, composable with '+'."""
from transferlab.strategies.base import Strategy, StrategyContext
from transferlab.strategies.compose import ComposedStrategy
from transferlab.strategies.registry import describe, list_strategies, parse_strategy, register_strategy

# Importing the modules registers the strategies.
from transferlab.strategies import forgetting, ib_select, l2sp, layerwise, peft_methods  # noqa: E402,F401  isort: skip

__all__ = ["Strategy", "StrategyContext", "ComposedStrategy", "describe", "list_strategies", "parse_strategy",
           "register_strategy"]
