"""The training batches of one epoch: a seeded order, no batch of a single example, and every example's
augmentation drawn from its own seed.

Why per-example seeds: random augmentation (crops, flips) draws from torch's global generator. Drawn in one
stream, each image's crop would depend on everything drawn before it: on how many DataLoader workers share the
work, and on where a resumed epoch starts. Seeded by (run seed, epoch, index), an example gets the same
augmentation with 0 or 8 workers, and a run resumed in the middle of an epoch continues exactly.
"""
from __future__ import annotations

import torch
from torch.utils.data import BatchSampler, Dataset


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one example's augmentation in one epoch (splitmix64's finaliser over the three)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (x ^ (x >> 31)) >> 1


class NoSingletonBatches(BatchSampler):
    """Batches of `batch_size`; a last batch of a single example joins the one before it. In training mode
    BatchNorm cannot normalise one example (one value per channel at small image sizes), so a training set of
    33 with batch size 32 would stop; merged, every training-set size of 2 or more works. `min_last`: the
    smallest last batch kept on its own (a distributed run needs one example per rank)."""

    def __init__(self, sampler, batch_size: int, min_last: int = 2):
        super().__init__(sampler, batch_size, drop_last=False)
        self.min_last = max(2, min_last)

    def __iter__(self):
        batches = list(super().__iter__())
        if len(batches) > 1 and len(batches[-1]) < self.min_last:
            last = batches.pop()
            batches[-1] = batches[-1] + last
        yield from batches

    def __len__(self) -> int:
        n, full = len(self.sampler), super().__len__()
        return full - 1 if full > 1 and 0 < n % self.batch_size < self.min_last else full


class EpochBatches(NoSingletonBatches):
    """One epoch's batches from `start` on, each example as (index, its augmentation seed)."""

    def __init__(self, sampler, batch_size: int, seed: int, epoch: int, start: int = 0, min_last: int = 2):
        super().__init__(sampler, batch_size, min_last)
        self.seed, self.epoch, self.start = seed, epoch, start

    def __iter__(self):
        for position, batch in enumerate(super().__iter__()):
            if position >= self.start:  # the order is drawn whole, so skipping keeps the rest in place
                yield [(i, item_seed(self.seed, self.epoch, i)) for i in batch]

    def __len__(self) -> int:
        return max(0, super().__len__() - self.start)


class RankRows:
    """Rank `rank`'s rows of each global batch (rows rank, rank + size, ...): the ranks of a distributed run
    together see each global batch once. A batch sampler (iterable of index lists with a length)."""

    def __init__(self, batches, rank: int, size: int):
        self.batches, self.rank, self.size = batches, rank, size

    def __iter__(self):
        for batch in self.batches:
            yield batch[self.rank::self.size]

    def __len__(self) -> int:
        return len(self.batches)


class SeededItems(Dataset):
    """`base[index]` with torch's generator seeded for that example alone (and restored after), so whatever the
    item's transform draws comes from the example's own seed. Keys are (index, seed) pairs."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            # The CPU generator alone: torch.manual_seed also queues a CUDA seeding call with a formatted stack
            # trace when CUDA is not initialised yet, per call (a cost per example, and a list that grows).
            torch.default_generator.manual_seed(seed)
            return self.base[index]


def check_batchnorm_batch_size(model, strategy, data, batch_size: int, epochs: int, bn_stats: str) -> None:
    """ConfigError when training batches of one example would reach a BatchNorm layer in training mode with a
    single value per channel (torch refuses it at the first step: a (1, C, 1, 1) map at a small image size, or
    any BatchNorm1d). Only a batch size of 1 can do it, as NoSingletonBatches never makes a last batch of one.
    Probed with one real training example through the layers that train in some epoch (the same rule as the
    trainer's `_train_mode`), in eval mode and without gradients, so a refusal comes before the run folder."""
    from transferlab.errors import ConfigError
    from transferlab.training.evaluate import ordered_loader

    if batch_size != 1 or bn_stats == "frozen":
        return
    training = _training_batchnorm(model, strategy.ever_trainable(model, epochs))
    if not training:
        return
    seen: dict[str, tuple[int, ...]] = {}  # layer name -> the shape of its input for one example

    def record(name: str):
        def hook(_module, inputs) -> None:  # returns None: a pre-hook's return value would replace the inputs
            seen.setdefault(name, tuple(inputs[0].shape))
        return hook

    hooks = [module.register_forward_pre_hook(record(name))
             for name, module in model.named_modules() if name in training]
    was_training = model.training
    try:
        # fork_rng: the probe's augmentation draws must not shift the run's random stream
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.eval()
            for batch in ordered_loader(data.train, 1, data.collate):
                if batch["labels"].numel():  # an unreadable first image is dropped by the collate
                    model(batch)
                    break
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    for name, shape in seen.items():
        if len(shape) > 1 and torch.Size(shape).numel() // shape[1] < 2:
            raise ConfigError(f"--batch-size 1: BatchNorm layer {name} would see 1 value per channel (its input is "
                              f"{'x'.join(map(str, shape))} for one example), and BatchNorm in training mode needs "
                              f"at least 2; use --batch-size 2 or more, or --bn-stats frozen (every BatchNorm layer "
                              f"keeps its pre-trained statistics)")


def _training_batchnorm(model, ever_trainable: set[str] | None) -> set[str]:
    """Names of the BatchNorm layers that re-estimate their statistics in some epoch: the trainer's rule applied
    with the parameters that train in some epoch marked trainable (requires_grad restored after)."""
    from transferlab.nn_utils import is_batchnorm
    from transferlab.training.bn_mode import batchnorm_trains

    saved = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        for name, p in model.named_parameters():
            p.requires_grad_(ever_trainable is None or name in ever_trainable)
        grouped = model.grouped_parameters()
        return {name for name, module in model.named_modules()
                if is_batchnorm(module) and batchnorm_trains(model, name, module, grouped)}
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(saved[name])
