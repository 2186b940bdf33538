"""Evaluation loops shared by the trainer, `transferlab evaluate` and the diagnostics."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from transferlab.nn_utils import to_device  # the layers above import it from here too


def ordered_loader(dataset, batch_size: int, collate, **options) -> "torch.utils.data.DataLoader":
    """A DataLoader in dataset order with a generator of its own: without one, creating its iterator draws the
    workers' base seed from torch's global generator, so an evaluation would shift the training stream after
    it (dropout masks, and everything else drawn later)."""
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                      generator=torch.Generator().manual_seed(0), **options)


@torch.no_grad()
def evaluate(model, loader, device, objective=None, prepare=None, autocast=nullcontext, reduce=None,
             correct: list | None = None) -> dict:
    """The objective's mean loss and accuracy over a loader: {"loss", "accuracy", "n"} (default:
    cross-entropy and accuracy). `prepare(batch)` puts a batch on the device in the run's layout (default:
    `to_device`); forward passes run inside `autocast()` (the run's precision), the loss in float32.
    `reduce(sums)`: the sums of all processes of a distributed run, each of which evaluated its own block.
    `correct`: a list to which each batch's per-example correctness is appended ((B,) bool, CPU, loader
    order), so that two runs scored on the same examples can be compared pairwise (transferlab.stats)."""
    from transferlab.training.objectives import Classification

    objective = objective or Classification()
    was_training = model.training
    model.eval()
    sums = {"loss": 0.0, "correct": 0, "n": 0}
    for batch in loader:
        if batch["labels"].numel() == 0:
            continue
        outputs = _score_batch(model, batch, device, objective, sums, prepare, autocast)
        if correct is not None:
            correct.append(outputs.argmax(1).cpu() == batch["labels"].cpu())
    model.train(was_training)
    return objective.summary(reduce(sums) if reduce is not None else sums)


def _score_batch(model, batch, device, objective, sums: dict, prepare, autocast) -> torch.Tensor:
    """One batch of `evaluate` and `evaluate_examples`: on the device, forward in `autocast()`, the objective's
    sums added to `sums`; returns the float32 outputs (B, C)."""
    batch = prepare(batch) if prepare is not None else to_device(batch, device)
    with autocast():
        outputs = model(batch).float()
    part = objective.batch_sums(outputs, batch["labels"])
    sums["loss"] += part["loss"]
    sums["correct"] = None if part["correct"] is None else sums["correct"] + part["correct"]
    sums["n"] += part["n"]
    return outputs



@dataclass
class ExampleResults:
    """One evaluation, example by example, in dataset order: entry i is `dataset[i]`.

    `predictions[i]` is the arg-max class, or None when the example could not be read (an image that failed to
    decode); `labels[i]` its label (None likewise). `summary` is what `evaluate` gives for the same data:
    {"loss", "accuracy", "n"}, n counting the examples read."""

    predictions: list[int | None]
    labels: list[int | None]
    summary: dict

    @property
    def correct(self) -> list[bool | None]:
        """Whether each example was predicted correctly; None for one that was not evaluated."""
        return [None if p is None else p == y for p, y in zip(self.predictions, self.labels)]


class _Indexed(Dataset):
    """`(index, base[index])`: an item that says which example it is."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        return index, self.base[index]


class IndexedCollate:
    """`[(index, item | None)] -> (indices (K,), collate(the K readable items))`: row k of the batch is example
    `indices[k]`, whatever the base collate drops. A class, so DataLoader workers can pickle it."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, pairs: list) -> tuple[torch.Tensor, dict]:
        kept = [(index, item) for index, item in pairs if item is not None]
        batch = self.collate([item for _, item in kept])
        if batch["labels"].shape[0] != len(kept):  # a collate that drops more than unreadable items
            raise RuntimeError(f"the collate function kept {batch['labels'].shape[0]} of {len(kept)} readable items, "
                               "so batch rows cannot be matched to examples")
        return torch.tensor([index for index, _ in kept], dtype=torch.long), batch


@torch.no_grad()
def evaluate_examples(model, dataset, collate, device, batch_size: int, prepare=None, autocast=nullcontext,
                      **loader_options) -> ExampleResults:
    """Classify every example of `dataset` in order (the batches `evaluate` sees over `ordered_loader`), keeping
    each one's prediction. Items are carried with their indices, so an unreadable one (dropped by the collate
    function) leaves its own entry None and shifts no other; labels are checked against `dataset.targets`."""
    from transferlab.training.objectives import Classification

    objective = Classification()
    targets = getattr(dataset, "targets", None)
    loader = ordered_loader(_Indexed(dataset), batch_size, IndexedCollate(collate), **loader_options)
    predictions: list[int | None] = [None] * len(dataset)
    labels: list[int | None] = [None] * len(dataset)
    was_training = model.training
    model.eval()
    sums = {"loss": 0.0, "correct": 0, "n": 0}
    for indices, batch in loader:
        if batch["labels"].numel() == 0:
            continue
        rows, ys = indices.tolist(), batch["labels"].tolist()
        if targets is not None and any(targets[i] != y for i, y in zip(rows, ys)):
            raise RuntimeError("batch labels do not match the dataset's targets at the carried indices")
        outputs = _score_batch(model, batch, device, objective, sums, prepare, autocast)
        for i, p, y in zip(rows, outputs.argmax(1).tolist(), ys):
            predictions[i], labels[i] = p, y
    model.train(was_training)
    return ExampleResults(predictions, labels, objective.summary(sums))
