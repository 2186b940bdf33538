"""Unlabelled target batches for the domain adaptation strategies (`--target-data`), one beside each training step.

The target set is cycled: pass c of it is a permutation drawn from (seed, c), cut into global batches of the
training batch size (the set itself when it is smaller), and the batch of global step s is batch s mod k of pass
s // k (k batches a pass). So the loader's position is a function of the step, which the checkpoint holds: a run
resumed at an epoch's end, or inside an epoch, draws the target batches the uninterrupted run drew. Each example
is augmented (when the run augments) from its own seed, as training examples are. In a distributed run each rank
takes its rows of the global batch (rows rank, rank + size, ...). Labels never leave this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from transferlab.training.batches import SeededItems, item_seed

_PASS_OFFSET = 1_000_003  # the passes' seeds live apart from the training epochs' (seed, epoch) streams


@dataclass
class TargetData:
    """The target set's examples (labels, if any, are ignored) and the collate that batches them."""

    dataset: Dataset
    collate: Callable[[list], dict]
    source: str = ""  # the path given, for messages and metrics


class TargetStream:
    """`batch(step)`: the target batch of a global step, this rank's rows, without labels."""

    def __init__(self, target: TargetData, global_batch_size: int, seed: int, rank: int = 0, size: int = 1,
                 loader_options: dict | None = None):
        self.target, self.seed, self.rank, self.size = target, seed, rank, size
        self.n = len(target.dataset)
        self.batch_size = min(global_batch_size, self.n)
        self.per_pass = max(1, self.n // self.batch_size)  # whole batches only: each step sees batch_size rows
        self.loader_options = loader_options or {}
        self._iterator = None
        self._next: tuple[int, int] | None = None  # (pass, batch) the open iterator yields next

    def position(self, step: int) -> tuple[int, int]:
        """(pass, batch within the pass) of a global step."""
        return divmod(step, self.per_pass)

    def batch(self, step: int) -> dict:
        where = self.position(step)
        if where != self._next:  # the first step, a resume, a new pass: open the pass from this batch
            self._iterator = iter(self._loader(*where))
        batch = next(self._iterator)
        cycle, index = where
        self._next = (cycle, index + 1) if index + 1 < self.per_pass else None
        return {k: v for k, v in batch.items() if k != "labels"}

    def _loader(self, cycle: int, start: int) -> DataLoader:
        gen = torch.Generator().manual_seed(item_seed(self.seed, _PASS_OFFSET + cycle, self.n))
        order = torch.randperm(self.n, generator=gen).tolist()
        epoch = _PASS_OFFSET + cycle
        batches = [[(i, item_seed(self.seed, epoch, i)) for i in order[b * self.batch_size:(b + 1) * self.batch_size]]
                   [self.rank::self.size] for b in range(start, self.per_pass)]
        return DataLoader(SeededItems(self.target.dataset), batch_sampler=batches, collate_fn=self.target.collate,
                          **self.loader_options)
