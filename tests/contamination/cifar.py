"""Real CIFAR-10 training images for the contamination tests (skipped where ../shared/data has no CIFAR-10)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SHARED_DATA

CIFAR_TRAIN = SHARED_DATA / "cifar10" / "train"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def cifar_images(indices) -> list[np.ndarray]:
    """Image NNNN of every class for each index, class by class within an index: 32 x 32 x 3 uint8."""
    if not CIFAR_TRAIN.is_dir():
        pytest.skip("CIFAR-10 not found in ../shared/data")
    return [np.asarray(Image.open(CIFAR_TRAIN / c / f"{i:04d}.jpg").convert("RGB")) for i in indices for c in CLASSES]
