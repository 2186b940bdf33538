"""A tiny model with a source head (a random 5-class test_efficientnet saved as --weights) and one short run
fine-tuned from it on digits 5-9 at 32 px, shared by the diagnostics tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_IMAGE_MODEL

IMAGE_SIZE = 32


@pytest.fixture(scope="session")
def source_weights(tmp_path_factory) -> Path:
    import timm

    from transferlab.safe_io import save_tensors

    torch.manual_seed(0)
    model = timm.create_model(TINY_IMAGE_MODEL, pretrained=False, num_classes=5)
    path = tmp_path_factory.mktemp("source") / "source.safetensors"
    save_tensors(path, model.state_dict())
    return path


def tiny_config(weights: Path, strategy: str = "full", data: str = "digits:5-9", **train):
    from transferlab.data import DataOptions
    from transferlab.runs import RunConfig
    from transferlab.training.config import TrainConfig

    train = {"epochs": 1, "batch_size": 32, "lr": 3e-3, "device": "cpu", **train}
    return RunConfig(model=TINY_IMAGE_MODEL, data=data, strategy=strategy, weights=str(weights),
                     train=TrainConfig(**train), data_options=DataOptions(image_size=IMAGE_SIZE, max_train=100))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, source_weights) -> Path:
    from transferlab.runs import finetune

    out = tmp_path_factory.mktemp("runs") / "full"
    finetune(tiny_config(source_weights), out)
    return out


@pytest.fixture
def report_ctx(tiny_run):
    """A comparison report's context with one finished `full` run (tiny_run), as the report sections read it."""
    from types import SimpleNamespace

    run = SimpleNamespace(run_dir=str(tiny_run), seed=0)
    results = SimpleNamespace(strategies=["full"], data="digits:5-9", finished_runs=lambda name: [run],
                              target_data=None)
    return SimpleNamespace(results=results, cache={}, source_data=None)
