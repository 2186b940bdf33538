"""Fixtures for the parameter-efficient methods: tiny runs, trained once per session and shared.

Image runs use the tiny timm architecture with weights saved once (so every run shares one base and its
fingerprint) on two class splits of digits at 16 px; text runs use the 2-layer BERT on 160 SST-2 rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_IMAGE_MODEL

METHODS = ("lora", "adapter", "bitfit")


@dataclass
class TrainedRun:
    out: Path
    metrics: dict
    before: dict = field(default_factory=dict)  # every tensor of the state dict after prepare_model
    after: dict = field(default_factory=dict)   # ... after training (best weights loaded)
    trainable: set = field(default_factory=set)


def _snapshot(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train(out: Path, model: str, data: str, strategy: str, weights: str | None = None, epochs: int = 3,
          lr: float = 1e-2, **data_options) -> TrainedRun:
    from transferlab.data import DataOptions
    from transferlab.runs import RunConfig, finetune
    from transferlab.training.config import TrainConfig
    from transferlab.training.trainer import Callback

    run = TrainedRun(out=out, metrics={})

    class Snap(Callback):
        def on_fit_start(self, trainer):
            run.before = _snapshot(trainer.model)
            run.trainable = trainer.strategy.ever_trainable(trainer.model, trainer.config.epochs)

        def on_fit_end(self, trainer, metrics):
            run.after = _snapshot(trainer.model)

    config = RunConfig(model=model, data=data, strategy=strategy, weights=weights,
                       train=TrainConfig(epochs=epochs, lr=lr, device="cpu", batch_size=32),
                       data_options=DataOptions(**data_options))
    run.metrics = finetune(config, out, callbacks=[Snap()])
    return run


def save_tiny_base(path: Path, seed: int) -> Path:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model(TINY_IMAGE_MODEL, num_classes=10)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    return save_tiny_base(tmp_path_factory.mktemp("base") / "tiny_base.safetensors", seed=0)


@pytest.fixture(scope="session")
def other_tiny_base(tmp_path_factory) -> Path:
    return save_tiny_base(tmp_path_factory.mktemp("base2") / "tiny_base_seed1.safetensors", seed=1)


@pytest.fixture(scope="session")
def image_runs(tmp_path_factory, tiny_base) -> dict[str, TrainedRun]:
    """lora, adapter, bitfit on digits 0-4 (3 epochs, 150 training images, 16 px)."""
    root = tmp_path_factory.mktemp("image_runs")
    return {m: train(root / m, TINY_IMAGE_MODEL, "digits:0-4", m, weights=str(tiny_base), image_size=16,
                     max_train=150) for m in METHODS}


@pytest.fixture(scope="session")
def image_run_high(tmp_path_factory, tiny_base) -> TrainedRun:
    """A second task: lora on digits 5-9, for attaching two modules to one base."""
    root = tmp_path_factory.mktemp("image_high")
    return train(root / "lora_high", TINY_IMAGE_MODEL, "digits:5-9", "lora", weights=str(tiny_base),
                 image_size=16, max_train=150)


@pytest.fixture(scope="session")
def text_runs(tmp_path_factory, tiny_bert_dir, small_text_data) -> dict[str, TrainedRun]:
    root = tmp_path_factory.mktemp("text_runs")
    return {m: train(root / m, str(tiny_bert_dir), str(small_text_data), m, epochs=1, lr=3e-3)
            for m in METHODS}
