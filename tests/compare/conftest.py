"""One small real grid, shared by the compare tests: the tiny timm model with fixed "pre-trained" weights
(written once, so w0 is reproducible), 3 digit classes, 60 training images, 2 epochs."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.conftest import TINY_IMAGE_MODEL

STRATEGIES = "linear_probe,full,freeze:k=50"  # freeze:k=50 parses, then fails at run time (too few groups)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    import timm
    import torch

    from transferlab.safe_io import save_tensors

    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_tensors(path, timm.create_model(TINY_IMAGE_MODEL, pretrained=False).state_dict())
    return path


def grid_args(out: Path, weights: Path, strategies: str = STRATEGIES, *extra: str) -> list[str]:
    return ["compare", "--model", TINY_IMAGE_MODEL, "--weights", str(weights), "--data", "digits:0-2",
            "--strategies", strategies, "--epochs", "2", "--max-train", "60", "--image-size", "32",
            "--out", str(out), *extra]


@pytest.fixture(scope="session")
def grid_dir(tmp_path_factory, tiny_weights) -> Path:
    from transferlab.cli import main

    out = tmp_path_factory.mktemp("grid") / "out"
    assert main(grid_args(out, tiny_weights)) == 0
    return out


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def run_folder(grid_dir: Path, strategy: str) -> Path:
    """The run folder of seed 0 of a strategy; for "scratch", of the baseline recipe the grid selected."""
    from transferlab.compare.grid import safe_name

    if strategy == "scratch":
        strategy = load_json(grid_dir / "results.json")["scratch_choice"]["selected"]
    return grid_dir / "runs" / safe_name(strategy) / "0"


class LogLines(logging.Handler):
    """Collects the messages of the loggers it is added to (caplog does not see worker processes' lines)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())
