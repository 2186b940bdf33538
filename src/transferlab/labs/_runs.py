"""Run configs for the labs: a model, data and strategy with training and data options by name. The data split
is seeded by 0 in every lab run, so seeds vary the training (initialisation of the head, order, dropout) and all
runs of a lab are compared on the same validation and test examples."""
from __future__ import annotations

from dataclasses import fields

from transferlab.data import DataOptions
from transferlab.runs import RunConfig
from transferlab.training.config import TrainConfig

_TRAIN = {f.name for f in fields(TrainConfig)}
_DATA = {f.name for f in fields(DataOptions)} - {"seed"}


def run_config(model: str, data: str, strategy: str, seed: int, weights: str | None = None, head: str = "linear",
               source_data: str | None = None, **options) -> RunConfig:
    unknown = set(options) - _TRAIN - _DATA
    if unknown:
        raise TypeError(f"unknown run options {sorted(unknown)}")
    train = TrainConfig(seed=seed, **{k: v for k, v in options.items() if k in _TRAIN})
    data_options = DataOptions(seed=0, **{k: v for k, v in options.items() if k in _DATA})
    return RunConfig(model=model, data=data, strategy=strategy, weights=weights, head=head, train=train,
                     data_options=data_options, strategy_options={"source_data": source_data} if source_data else {})


# The bundled real model on the bundled data at the demo's settings (compare's DIGITS_DEFAULTS: 64 px, BatchNorm
# statistics kept as pre-trained, which the measured demo needs at this size).
IMAGE_MODEL = "efficientnet_lite0"
DIGITS = {"image_size": 64, "bn_stats": "frozen", "lr": 2e-3, "batch_size": 32}
