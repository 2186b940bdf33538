"""Helpers the diagnostics share: the pre-trained reference of a run, loaders, pooling of activations."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader

from transferlab.errors import ConfigError

if TYPE_CHECKING:
    from transferlab.models import TransferModel
    from transferlab.runs import RunConfig

logger = logging.getLogger(__name__)


def has_reproducible_start(model: str, weights: str | None) -> bool:
    """Whether building `model` again (with `weights`) gives the backbone a run of it started from, as its model
    family says (`ModelFamily.reproducible_start`): yes for a registry model, an HF directory or `hf:<hub id>`
    (pre-trained weights) and anything given --weights; no for a timm architecture without --weights, a random
    init that is a new draw on every build (drift then has no meaningful reference). Names `create_model`
    refuses: yes (no run of them exists to be random)."""
    from transferlab.models._families import reproducible_start

    return True if weights else reproducible_start(model)


def reference_model(config: "RunConfig", strategy=None) -> "TransferModel":
    """A freshly built pre-trained model for a run (with the strategy's structural changes, e.g. LoRA)."""
    from transferlab.models import create_model

    if not config.classes:
        raise ConfigError("the run's config.json lists no classes; was it written by transferlab finetune?")
    model = create_model(config.model, len(config.classes), weights=config.weights)
    if strategy is not None:
        strategy.prepare_model(model)
    model.eval()
    return model


def pretrained_key(kind: str, config: "RunConfig", data: str, split: str, batch_size: int, *extra) -> tuple:
    """Cache key (a report's `ctx.cache`) for the pre-trained model's outputs on a run's data: the same for every
    run of one grid that shares model, weights, data, data options and batching."""
    return (kind, config.model, config.weights, data, split, repr(config.data_options), batch_size, *extra)


def split_of(data, split: str):
    dataset = {"val": data.val, "test": data.test, "train": data.train}.get(split)
    if dataset is None:
        raise ConfigError(f"{data.source} has no {split} split")
    return dataset


def make_loader(data, dataset, batch_size: int) -> DataLoader:
    from transferlab.training.evaluate import ordered_loader

    return ordered_loader(dataset, batch_size, data.collate)


def pool(output, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """`nn_utils.pool_output`, detached: a diagnostic reads activations, it does not train them."""
    from transferlab.nn_utils import pool_output

    return pool_output(output, attention_mask).detach()


class GroupOutputs:
    """Forward hooks on every top-level module of each depth group; after a forward pass, `outputs[i]` is
    `keep(output, attention_mask)` of the module of group i that ran last, i.e. of the group's output: by
    default pooled to (B, D) and detached (`pool`)."""

    def __init__(self, model: "TransferModel", keep=None):
        self.outputs: list[torch.Tensor | None] = [None] * len(model.depth_groups)
        self.attention_mask: torch.Tensor | None = None
        self._keep = keep or pool
        self._handles = []
        for i, modules in enumerate(model.group_modules()):
            for _, module in modules:
                self._handles.append(module.register_forward_hook(self._hook(i)))

    def _hook(self, index: int):
        def fn(module, inputs, output):
            self.outputs[index] = self._keep(output, self.attention_mask)
        return fn

    def run(self, model, batch: dict) -> list[torch.Tensor | None]:
        self.outputs = [None] * len(self.outputs)
        self.attention_mask = batch.get("attention_mask")
        model(batch)
        return list(self.outputs)

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


REPORT_MAX_BATCHES = 4  # the comparison report's CKA and BatchNorm sections: evaluation batches per run


def first_finished_runs(ctx, section: str) -> Iterator[tuple[str, str]]:
    """(strategy, run folder of its first finished seed) of a comparison report's context, logging progress as
    report section `section`: each costs model loads and forward passes, and a grid has many."""
    r = ctx.results
    runs = [(name, runs[0].run_dir) for name in r.strategies if (runs := r.finished_runs(name))]
    for i, (name, run_dir) in enumerate(runs, 1):
        logger.info("report section %s: %d/%d %s", section, i, len(runs), name)
        yield name, run_dir


def figure_png(fig) -> bytes:
    """A figure as PNG bytes (a report section's Figure)."""
    from transferlab.figures import png_bytes

    return png_bytes(fig)


def save_figure(fig, path):
    """Lay out and write a figure as PNG (making the folder)."""
    from transferlab.figures import save_png

    return save_png(fig, path)


def target_batches(loader, device, max_batches: int | None = None):
    """Non-empty batches on `device`, at most `max_batches` of them."""
    from transferlab.training.evaluate import to_device

    used = 0
    for batch in loader:
        if max_batches is not None and used >= max_batches:
            return
        if batch["labels"].numel() == 0:
            continue
        used += 1
        yield to_device(batch, device)
