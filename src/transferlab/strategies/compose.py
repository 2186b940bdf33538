"""A spec of several strategies joined with '+', run as one."""
from __future__ import annotations

import torch

from transferlab.errors import ConfigError
from transferlab.strategies.base import Strategy, StrategyContext


class ComposedStrategy(Strategy):
    """Runs its parts' hooks in order: trainable sets intersect, lr scales multiply, loss terms add up.
    The parser (`parse_strategy`) puts `full` first where no part selects what trains."""

    name = "composed"

    def __init__(self, parts: list[Strategy]):
        super().__init__()
        selections = [p for p in parts if p.role == "selection"]
        if len(selections) > 1:
            raise ConfigError(f"contradictory strategies: {' + '.join(p.name for p in selections)} each decide "
                              f"which parameters train; combine at most one of them with lr strategies "
                              f"(discriminative) and regularisers (l2sp, ewc, lwf)")
        names = [p.name for p in parts]
        if len(set(names)) != len(names):
            raise ConfigError(f"strategy given twice in {'+'.join(names)}")
        self.parts = parts
        self.reads_inputs = any(p.reads_inputs for p in parts)
        self.needs_target = any(p.needs_target for p in parts)

    def spec(self) -> str:
        return "+".join(p.spec() for p in self.parts)

    def check_epochs(self, total_epochs):
        for p in self.parts:
            p.check_epochs(total_epochs)

    def prepare_model(self, model):
        for p in self.parts:
            p.prepare_model(model)

    def check_training(self, model, batch, channels_last):
        for p in self.parts:
            p.check_training(model, batch, channels_last)

    def on_fit_start(self, model, ctx: StrategyContext):
        for p in self.parts:
            p.on_fit_start(model, ctx)

    def _intersect(self, pick) -> set[str] | None:
        """Intersection of the parts' parameter sets; parts answering None have no opinion."""
        chosen = None
        for p in self.parts:
            names = pick(p)
            if names is not None:
                chosen = names if chosen is None else chosen & names
        return chosen

    def trainable(self, model, epoch):
        return self._intersect(lambda p: p.trainable(model, epoch))

    def ever_trainable(self, model, total_epochs):
        return self._intersect(lambda p: p.ever_trainable(model, total_epochs))

    def anchored_parameters(self, model):
        return set().union(*(p.anchored_parameters(model) for p in self.parts))

    def lr_scales(self, model, epoch):
        # With an lr strategy present, a selection strategy's default backbone/head ratio steps aside:
        # `discriminative` alone decides the per-group rates (phases such as lp_ft's still multiply in).
        has_lr = any(p.role == "lr" for p in self.parts)
        scales = None
        for p in self.parts:
            if has_lr and getattr(p, "defers_lr", False):
                continue
            s = p.lr_scales(model, epoch)
            if s is not None:
                scales = s if scales is None else [a * b for a, b in zip(scales, s)]
        return scales

    def schedule_restarts(self, total_epochs):
        return sorted(set().union(*(p.schedule_restarts(total_epochs) for p in self.parts)))

    def loss_terms(self, model, batch, logits):
        terms: dict[str, torch.Tensor] = {}
        for p in self.parts:
            terms.update(p.loss_terms(model, batch, logits))
        return terms

    def target_loss_terms(self, model, batch, logits, target, progress):
        terms: dict[str, torch.Tensor] = {}
        for p in self.parts:
            terms.update(p.target_loss_terms(model, batch, logits, target, progress))
        return terms

    def own_parameters(self):
        return [(f"{p.name}.{n}", param) for p in self.parts for n, param in p.own_parameters()]

    def save_task_module(self, model, out_dir):
        facts = {}
        for p in self.parts:
            facts.update(p.save_task_module(model, out_dir) or {})
        return facts or None

    def state_dict(self):
        return {f"{p.name}.{k}": v for p in self.parts for k, v in p.state_dict().items()}

    def load_state_dict(self, state):
        for p in self.parts:
            prefix = p.name + "."
            p.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def part(self, name: str) -> Strategy | None:
        return next((p for p in self.parts if p.name == name), None)
