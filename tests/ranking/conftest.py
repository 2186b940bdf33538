"""A tiny timm model's random weights saved as a state-dict file (the candidate with a source head)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TINY_IMAGE_MODEL


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    import timm
    import torch

    from transferlab.safe_io import save_tensors

    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_tensors(path, timm.create_model(TINY_IMAGE_MODEL, pretrained=False).state_dict())
    return path
