"""Tiny finished runs to export: an image-folder data set made from digits (train/ and val/ class folders, so a
consumer outside transferlab finds the validation split as files), and runs trained once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TINY_IMAGE_MODEL
from transferlab.cli import main


@pytest.fixture(scope="session")
def digit_folder(tmp_path_factory) -> Path:
    """digits 0-2 as 40 px RGB PNGs: train/<class>/ (about 70) and val/<class>/ (about 25)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digit_folder")
    digits = load_digits()
    for i, (img, y) in enumerate(zip(digits.images[:300], digits.target[:300])):
        if y > 2:
            continue
        folder = root / ("val" if i % 4 == 0 else "train") / str(y)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (img * 16).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).resize((40, 40), Image.BILINEAR).convert("RGB").save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, digit_folder):
    """make(model, strategy, data=None) -> a finished run folder (1-2 epochs), trained once per session."""
    made: dict[tuple, Path] = {}
    root = tmp_path_factory.mktemp("export_runs")

    def make(model: str = TINY_IMAGE_MODEL, strategy: str = "full", data: str | Path | None = None,
             epochs: int = 2) -> Path:
        key = (model, strategy, str(data))
        if key not in made:
            out = root / f"run{len(made)}"
            args = ["finetune", "--model", model, "--data", str(data or digit_folder), "--strategy", strategy,
                    "--epochs", str(epochs), "--out", str(out), "--lr", "0.01"]
            args += ["--max-length", "32"] if data is not None and model != TINY_IMAGE_MODEL and "resnet" not in \
                model else ["--image-size", "32"]
            assert main(args) == 0
            made[key] = out
        return made[key]

    return make
