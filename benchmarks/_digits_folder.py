"""Write scikit-learn's digits as an image folder with a held-out test split (40% of each class).

Usage: python benchmarks/_digits_folder.py ROOT   -> ROOT/train/<digit>/*.png and ROOT/test/<digit>/*.png
(8x8 grey, 0..16 levels scaled to 0..255, lossless PNG; the data pipeline scales them to the model's size).
Shared by pretraining_study.sh and ranking_zoo.py, so both score the same held-out images."""
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def write(root: Path) -> None:
    digits = load_digits()
    rng = np.random.default_rng(0)
    for label in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == label))
        n_test = int(round(0.4 * len(idx)))
        for split, part in (("test", idx[:n_test]), ("train", idx[n_test:])):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for i in part:
                Image.fromarray((digits.images[i] * 255 / 16).round().astype(np.uint8)).save(folder / f"{i:04d}.png")


if __name__ == "__main__":
    write(Path(sys.argv[1]))
    print("digits folder:", sys.argv[1])
