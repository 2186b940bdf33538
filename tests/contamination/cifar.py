"""Real CIFAR-10 training images for the contamination tests (skipped where $TRANSFERLAB_DATA has no cifar10/)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from tests.conftest import shared_data

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def cifar_images(indices) -> list[np.ndarray]:
    """Image NNNN of every class for each index, class by class within an index: 32 x 32 x 3 uint8."""
    train = shared_data("cifar10") / "train"
    return [np.asarray(Image.open(train / c / f"{i:04d}.jpg").convert("RGB")) for i in indices for c in CLASSES]
