"""The bundled digits as an image folder with train/val/test splits, for the labs that need a test split or a
corrupted copy (the `digits` spec has train and val only, and `corrupt_folder` reads folders).

Each 8x8 scan is upscaled to `size` px (bilinear, the digits loader's interpolation) and written as a greyscale
PNG under DIR/{train,val,test}/<digit>/<row>.png, `row` its row in `load_digits()`. The test split is held out
first and the validation split from the rest, both stratified and seeded, so the same seed always gives the
same three splits.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


def split_rows(targets, test_fraction: float, val_fraction: float, seed: int) -> dict[str, list[int]]:
    """Row indices per split: test held out first, then val from what remains (both stratified)."""
    from transferlab.data._split import holdout_split

    rest, test = holdout_split(targets, test_fraction, seed, "digits")
    kept, val = holdout_split([targets[i] for i in rest], val_fraction / (1 - test_fraction), seed + 1, "digits")
    return {"train": [rest[i] for i in kept], "val": [rest[i] for i in val], "test": list(test)}


def write_digits_folder(out: str | Path, size: int = 64, test_fraction: float = 0.25, val_fraction: float = 0.2,
                        seed: int = 0) -> Path:
    """Write the folder (once: a folder holding DIR/done is kept; written into a temporary sibling and renamed, so
    a kill never leaves a half-written DIR: labs._atomic_folder); returns DIR."""
    from transferlab.labs._atomic_folder import write_atomically

    out = Path(out)
    if (out / DONE).is_file():  # complete (older versions wrote the same marker last)
        return out

    def write(folder: Path) -> None:
        from PIL import Image
        from sklearn.datasets import load_digits

        raw = load_digits()
        targets = [int(t) for t in raw.target]
        for split, rows in split_rows(targets, test_fraction, val_fraction, seed).items():
            for row in rows:
                pixels = (raw.images[row] / 16.0 * 255).round().astype(np.uint8)  # (8, 8), 0..16 -> 0..255
                image = Image.fromarray(pixels, mode="L").resize((size, size), Image.BILINEAR)
                path = folder / split / str(targets[row]) / f"{row}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                image.save(path)

    return write_atomically(out, DONE, DONE_TEXT, write, _owned)


DONE, DONE_TEXT = "done", "digits folder complete\n"


def _owned(parts: tuple[str, ...]) -> bool:
    """A file this writer makes, by its path in DIR: split/<digit>/<row>.png."""
    return (len(parts) == 3 and parts[0] in SPLITS and parts[1].isdigit() and parts[2].endswith(".png")
            and parts[2][:-4].isdigit())
